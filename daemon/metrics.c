/*
 * daemon/metrics.c - /metrics and /healthz over nng's HTTP server (see metrics.h for the model).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>

#include "daemon/alerts.h"
#include "daemon/cmdtab.h"
#include "daemon/control.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/procstat.h"
#include "daemon/server.h"

#include "daemon/store/store.h"

#define METRICS_FIRING_MAX 64

/* What the loop publishes each tick. Immutable once published; freed by its last reference. */
typedef struct metrics_snap {
    atomic_uint refs;
    uint64_t taken_ms;
    uint64_t start_ms;
    uint32_t interval_ms;
    uint32_t lag_limit_ms;
    uint64_t rss_limit;
    bool draining;
    bus_totals totals;
    gw_stats gw;
    alerts_sample smp;
    unsigned long ctl_requests, ctl_denied;
    bus_agent_stats *agents;
    size_t n_agents;
    alerts_state firing[METRICS_FIRING_MAX];
    size_t n_firing;
    store_stats st;
} metrics_snap;

struct metrics {
    srv *s;
    struct alerts *al;
    struct control *ctl;
    nng_http_server *http;
    bool started;
    pthread_mutex_t lock; /* guards cur (the swap and the reference taken) only */
    metrics_snap *cur;
    char url[128];
};

/* ---- snapshot ---------------------------------------------------------------------------- */

static void metrics_snap_unref(metrics_snap *sn)
{
    if (sn != NULL && atomic_fetch_sub(&sn->refs, 1) == 1) {
        free(sn->agents);
        free(sn);
    }
}

static metrics_snap *metrics_snap_get(metrics *m)
{
    metrics_snap *sn;

    pthread_mutex_lock(&m->lock);
    sn = m->cur;
    if (sn != NULL) {
        atomic_fetch_add(&sn->refs, 1);
    }
    pthread_mutex_unlock(&m->lock);
    return sn;
}

typedef struct metrics_collect {
    bus_agent_stats *v;
    size_t n, cap;
} metrics_collect;

static void metrics_collect_agent(void *arg, const bus_agent_stats *st)
{
    metrics_collect *c = arg;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        bus_agent_stats *v = realloc(c->v, cap * sizeof(*v));
        if (v == NULL) {
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    c->v[c->n++] = *st;
}

void metrics_refresh(void *arg)
{
    metrics *m = arg;
    srv *s = m->s;
    metrics_collect c = {NULL, 0, 0};
    metrics_snap *sn = calloc(1, sizeof(*sn));
    metrics_snap *old;

    if (sn == NULL) {
        return; /* keep the previous one; its age will show */
    }
    atomic_init(&sn->refs, 1);
    sn->taken_ms = srv_now_ms();
    sn->start_ms = s->start_ms;
    sn->interval_ms = s->cfg.alert_interval_ms;
    sn->lag_limit_ms = s->cfg.health_loop_lag_ms;
    sn->rss_limit = s->cfg.alert_rss_bytes;
    sn->draining = s->draining;
    bus_totals_get(s->bus, &sn->totals);
    gw_stats_get(s->gw, &sn->gw);
    alerts_sample_get(m->al, &sn->smp);
    sn->ctl_requests = control_requests(m->ctl);
    sn->ctl_denied = control_denied(m->ctl);
    bus_foreach_agent(s->bus, metrics_collect_agent, &c);
    sn->agents = c.v;
    sn->n_agents = c.n;
    sn->n_firing = alerts_firing(m->al, sn->firing, METRICS_FIRING_MAX);
    if (sn->n_firing > METRICS_FIRING_MAX) {
        sn->n_firing = METRICS_FIRING_MAX;
    }
    if (s->store != NULL) {
        store_stats_get(s->store, &sn->st);
    }

    pthread_mutex_lock(&m->lock);
    old = m->cur;
    m->cur = sn;
    pthread_mutex_unlock(&m->lock);
    metrics_snap_unref(old);
}

/* ---- text building ----------------------------------------------------------------------- */

typedef struct metrics_buf {
    char *p;
    size_t len, cap;
    bool failed;
} metrics_buf;

static void metrics_printf(metrics_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_printf(metrics_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->failed) {
        return;
    }
    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(b->p != NULL ? b->p + b->len : NULL, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->failed = true;
            return;
        }
        if (b->len + (size_t)n < b->cap) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 16384;
        while (cap <= b->len + (size_t)n) {
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void metrics_head(metrics_buf *b, const char *name, const char *type, const char *help)
{
    metrics_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void metrics_one(metrics_buf *b, const char *name, const char *type, const char *help,
                        double v)
{
    metrics_head(b, name, type, help);
    metrics_printf(b, "%s %.10g\n", name, v);
}

/* Per-agent counters: one family per field, one line per agent. */
typedef struct metrics_agent_field {
    const char *name;
    const char *help;
    size_t off;
    bool counter;
} metrics_agent_field;

#define METRICS_AF(n, f, c, h)                                                                     \
    {                                                                                              \
        "hsbus_agent_" n, h, offsetof(bus_agent_stats, f), c                                       \
    }
static const metrics_agent_field metrics_agent_fields[] = {
    METRICS_AF("received_total", received, true, "Messages accepted for the agent."),
    METRICS_AF("delivered_total", delivered, true,
               "Messages handed to the agent, redeliveries included."),
    METRICS_AF("acked_total", acked, true, "Messages the agent acknowledged."),
    METRICS_AF("nacked_total", nacked, true, "Messages the agent refused (nack)."),
    METRICS_AF("redelivered_total", redelivered, true,
               "Messages delivered again after a nack, timeout or disconnect."),
    METRICS_AF("expired_total", expired, true, "Messages whose deadline passed before delivery."),
    METRICS_AF("dead_lettered_total", dead_lettered, true,
               "Messages moved to the dead-letter table."),
    METRICS_AF("rejected_busy_total", rejected_busy, true,
               "Sends refused with E_BUSY (queue full)."),
    METRICS_AF("rejected_breaker_total", rejected_breaker, true,
               "Sends refused with E_BREAKER_OPEN."),
    METRICS_AF("sent_total", sent, true, "Messages sent by the agent."),
    METRICS_AF("breaker_transitions_total", breaker_transitions, true, "Breaker state changes."),
    METRICS_AF("queue_bytes", queued_bytes, false, "Bytes queued for the agent."),
    METRICS_AF("in_flight", in_flight, false, "Messages delivered and not yet settled."),
    METRICS_AF("parked_fetches", parked_fetches, false, "Fetches the agent keeps parked."),
};

static const char *const metrics_lanes[HSB_PRIO_COUNT] = {"critical", "high", "normal", "low"};

static void metrics_format_agents(metrics_buf *b, const metrics_snap *sn)
{
    size_t i, f;

    for (f = 0; f < sizeof(metrics_agent_fields) / sizeof(metrics_agent_fields[0]); f++) {
        const metrics_agent_field *af = &metrics_agent_fields[f];
        metrics_head(b, af->name, af->counter ? "counter" : "gauge", af->help);
        for (i = 0; i < sn->n_agents; i++) {
            uint64_t v;
            memcpy(&v, (const char *)&sn->agents[i] + af->off, sizeof(v));
            metrics_printf(b, "%s{agent=\"%s\"} %" PRIu64 "\n", af->name, sn->agents[i].name, v);
        }
    }
    metrics_head(b, "hsbus_agent_instances", "gauge", "Connected instances of the agent.");
    for (i = 0; i < sn->n_agents; i++) {
        metrics_printf(b, "hsbus_agent_instances{agent=\"%s\"} %" PRIu32 "\n", sn->agents[i].name,
                       sn->agents[i].instances);
    }
    metrics_head(b, "hsbus_agent_queue_depth", "gauge", "Messages queued for the agent, per lane.");
    for (i = 0; i < sn->n_agents; i++) {
        for (int l = 0; l < HSB_PRIO_COUNT; l++) {
            metrics_printf(b, "hsbus_agent_queue_depth{agent=\"%s\",lane=\"%s\"} %" PRIu64 "\n",
                           sn->agents[i].name, metrics_lanes[l], sn->agents[i].queued[l]);
        }
    }
    metrics_head(b, "hsbus_agent_breaker_state", "gauge",
                 "Circuit breaker state: 0 closed, 1 open, 2 half-open.");
    for (i = 0; i < sn->n_agents; i++) {
        metrics_printf(b, "hsbus_agent_breaker_state{agent=\"%s\"} %d\n", sn->agents[i].name,
                       (int)sn->agents[i].breaker);
    }
    metrics_head(b, "hsbus_agent_breaker_forced", "gauge",
                 "1 when an operator forced the breaker's state.");
    for (i = 0; i < sn->n_agents; i++) {
        metrics_printf(b, "hsbus_agent_breaker_forced{agent=\"%s\"} %d\n", sn->agents[i].name,
                       sn->agents[i].breaker_forced ? 1 : 0);
    }
    metrics_head(b, "hsbus_agent_latency_seconds", "histogram",
                 "Latency from acceptance by the broker to the agent's ack.");
    for (i = 0; i < sn->n_agents; i++) {
        const bus_agent_stats *a = &sn->agents[i];
        uint64_t cum = 0;
        for (int k = 0; k < BUS_HIST_BUCKETS; k++) {
            cum += a->latency.counts[k];
            metrics_printf(
                b, "hsbus_agent_latency_seconds_bucket{agent=\"%s\",le=\"%.6g\"} %" PRIu64 "\n",
                a->name, (double)bus_hist_bounds_us[k] / 1e6, cum);
        }
        cum += a->latency.counts[BUS_HIST_BUCKETS];
        metrics_printf(b,
                       "hsbus_agent_latency_seconds_bucket{agent=\"%s\",le=\"+Inf\"} %" PRIu64 "\n",
                       a->name, cum);
        metrics_printf(b, "hsbus_agent_latency_seconds_sum{agent=\"%s\"} %.6f\n", a->name,
                       (double)a->latency.sum_us / 1e6);
        metrics_printf(b, "hsbus_agent_latency_seconds_count{agent=\"%s\"} %" PRIu64 "\n", a->name,
                       cum);
    }
}

static void metrics_format_store(metrics_buf *b, const metrics_snap *sn)
{
    metrics_one(b, "hsbus_store_up", "gauge",
                "1 when the SQLite store is attached and its last commits succeeded.",
                sn->smp.store_present && sn->smp.store_ok ? 1 : 0);
    if (!sn->smp.store_present) {
        return;
    }
    const store_pool_stats *p = &sn->st.pool;
    const store_qcache_stats *q = &sn->st.cache;
    metrics_one(b, "hsbus_store_jobs_total", "counter", "Write jobs completed.", (double)p->jobs);
    metrics_one(b, "hsbus_store_jobs_failed_total", "counter",
                "Write jobs completed with an error.", (double)p->jobs_failed);
    metrics_one(b, "hsbus_store_commits_total", "counter", "Transactions committed (groups).",
                (double)p->groups);
    metrics_one(b, "hsbus_store_commits_failed_total", "counter",
                "Transactions whose BEGIN or COMMIT failed.", (double)p->groups_failed);
    metrics_one(b, "hsbus_store_replays_total", "counter",
                "Groups rolled back and run again job by job because a job failed.",
                (double)p->replays);
    metrics_one(b, "hsbus_store_commit_seconds_total", "counter", "Time spent in COMMIT.",
                (double)p->commit_ns / 1e9);
    metrics_one(b, "hsbus_store_queued_jobs", "gauge", "Write jobs waiting.", (double)p->queued);
    metrics_one(b, "hsbus_store_refused_busy_total", "counter",
                "Write jobs refused because the queue was full.", (double)p->refused_busy);
    metrics_one(b, "hsbus_store_checkouts_total", "counter", "Reader connections checked out.",
                (double)p->checkouts);
    metrics_one(b, "hsbus_store_checkout_waits_total", "counter",
                "Checkouts that waited for a free reader.", (double)p->checkout_waits);
    metrics_one(b, "hsbus_store_checkout_timeouts_total", "counter", "Checkouts that gave up.",
                (double)p->checkout_timeouts);
    metrics_one(b, "hsbus_store_reader_utilization", "gauge",
                "Busy reader time over available reader time, 0..1.", p->reader_utilization);
    metrics_one(b, "hsbus_store_audit_seq", "gauge", "Sequence number of the last audit row.",
                (double)sn->st.audit_seq);
    metrics_one(b, "hsbus_cache_hits_total", "counter", "Query cache hits.", (double)q->hits);
    metrics_one(b, "hsbus_cache_misses_total", "counter", "Query cache misses.", (double)q->misses);
    metrics_one(b, "hsbus_cache_hit_ratio", "gauge", "Hits over lookups since start, 0..1.",
                q->hit_rate);
    metrics_one(b, "hsbus_cache_inserts_total", "counter", "Results stored in the cache.",
                (double)q->inserts);
    metrics_one(b, "hsbus_cache_evictions_total", "counter",
                "Entries dropped by the byte bound (LRU).", (double)q->evictions);
    metrics_one(b, "hsbus_cache_expirations_total", "counter",
                "Entries dropped when their TTL passed.", (double)q->expirations);
    metrics_one(b, "hsbus_cache_invalidations_total", "counter",
                "Entries dropped by writes or flushes.", (double)q->invalidations);
    metrics_one(b, "hsbus_cache_flushes_total", "counter", "Explicit cache flushes.",
                (double)q->flushes);
    metrics_one(b, "hsbus_cache_entries", "gauge", "Entries in the cache.", (double)q->entries);
    metrics_one(b, "hsbus_cache_bytes", "gauge", "Bytes held by the cache.", (double)q->bytes);
    metrics_one(b, "hsbus_cache_max_bytes", "gauge", "The cache's byte bound.",
                (double)q->max_bytes);
}

static void metrics_format(metrics_buf *b, const metrics_snap *sn)
{
    static const hsb_log_level levels[] = {HSB_LOG_DEBUG, HSB_LOG_INFO, HSB_LOG_WARN,
                                           HSB_LOG_ERROR};
    procstat ps;

    procstat_read(&ps, 1);
    metrics_head(b, "hsbus_build_info", "gauge", "Version of the running hsbusd (value 1).");
    metrics_printf(b, "hsbus_build_info{version=\"%s\"} 1\n", HSB_VERSION);
    metrics_one(b, "hsbus_uptime_seconds", "gauge", "Seconds since hsbusd started.",
                (double)(srv_now_ms() - sn->start_ms) / 1e3);
    metrics_one(b, "hsbus_snapshot_age_seconds", "gauge",
                "Age of the loop's statistics snapshot these figures come from.",
                (double)(srv_now_ms() - sn->taken_ms) / 1e3);
    metrics_one(b, "hsbus_loop_lag_seconds", "gauge", "How late the last operator tick fired.",
                (double)sn->smp.loop_lag_ms / 1e3);
    metrics_one(b, "hsbus_loop_lag_max_seconds", "gauge", "The worst loop lag since start.",
                (double)sn->smp.loop_lag_max_ms / 1e3);
    metrics_one(b, "hsbus_draining", "gauge", "1 while the daemon drains for shutdown.",
                sn->draining ? 1 : 0);

    metrics_one(b, "hsbus_routed_total", "counter", "Messages routed.", (double)sn->totals.routed);
    metrics_one(b, "hsbus_no_route_total", "counter", "Sends refused with E_NOROUTE.",
                (double)sn->totals.no_route);
    metrics_one(b, "hsbus_busy_total", "counter", "Sends refused with E_BUSY.",
                (double)sn->totals.busy);
    metrics_one(b, "hsbus_expired_total", "counter", "Messages expired before delivery.",
                (double)sn->totals.expired);
    metrics_one(b, "hsbus_dead_lettered_total", "counter", "Messages dead-lettered.",
                (double)sn->totals.dead_lettered);
    metrics_one(b, "hsbus_duplicates_total", "counter", "Sends dropped as duplicates of a cid.",
                (double)sn->totals.duplicates);
    metrics_one(b, "hsbus_displaced_total", "counter", "Messages displaced by a higher lane.",
                (double)sn->totals.displaced);
    metrics_one(b, "hsbus_rejected_breaker_total", "counter", "Sends refused with E_BREAKER_OPEN.",
                (double)sn->totals.rejected_breaker);
    metrics_one(b, "hsbus_sys_errors_dropped_total", "counter",
                "sys.error envelopes that could not be delivered.",
                (double)sn->totals.sys_errors_dropped);
    metrics_one(b, "hsbus_queued", "gauge", "Messages queued, all agents.",
                (double)sn->totals.queued);
    metrics_one(b, "hsbus_in_flight", "gauge", "Messages in flight, all agents.",
                (double)sn->totals.in_flight);
    metrics_one(b, "hsbus_clients", "gauge", "Connected agent instances.",
                (double)sn->totals.clients);

    metrics_format_agents(b, sn);

    metrics_one(b, "hsbus_gateway_requests_total", "counter", "Agent-protocol requests received.",
                (double)sn->gw.requests);
    metrics_one(b, "hsbus_gateway_bad_requests_total", "counter",
                "Agent-protocol requests refused as malformed.", (double)sn->gw.bad_requests);
    metrics_one(b, "hsbus_gateway_connections_total", "counter", "Agent connections accepted.",
                (double)sn->gw.connections);
    metrics_one(b, "hsbus_gateway_open_connections", "gauge", "Agent connections open.",
                (double)sn->gw.open_connections);
    metrics_one(b, "hsbus_gateway_contexts", "gauge", "Gateway nng contexts allocated.",
                (double)sn->gw.contexts);
    metrics_one(b, "hsbus_gateway_parked_fetches", "gauge", "Fetches parked in the gateway.",
                (double)sn->gw.parked);
    metrics_one(b, "hsbus_control_requests_total", "counter", "Control socket requests.",
                (double)sn->ctl_requests);
    metrics_one(b, "hsbus_control_denied_total", "counter",
                "Control requests refused by the peer uid check.", (double)sn->ctl_denied);

    metrics_format_store(b, sn);

    metrics_head(b, "hsbus_alert_firing", "gauge",
                 "1 for each alert rule firing, by rule and agent.");
    for (size_t i = 0; i < sn->n_firing; i++) {
        metrics_printf(b, "hsbus_alert_firing{rule=\"%s\",agent=\"%s\"} 1\n",
                       alerts_rule_name(sn->firing[i].rule), sn->firing[i].agent);
    }
    metrics_head(b, "hsbus_log_lines_total", "counter", "Log lines written, by level.");
    for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
        metrics_printf(b, "hsbus_log_lines_total{level=\"%s\"} %lu\n", log_level_name(levels[i]),
                       log_count(levels[i]));
    }
    metrics_one(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
                (double)ps.rss_bytes);
    metrics_one(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.",
                (double)ps.vsize_bytes);
    metrics_one(b, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds.",
                ps.cpu_seconds);
    metrics_one(b, "process_open_fds", "gauge", "Open file descriptors.", (double)ps.open_fds);
    metrics_one(b, "process_threads", "gauge", "Threads of the process.", (double)ps.threads);
    metrics_one(b, "process_start_time_seconds", "gauge", "Start time since the epoch in seconds.",
                (double)sn->start_ms / 1e3);
}

/* metrics_health writes the failing checks into b; returns the HTTP status. */
static uint16_t metrics_health(metrics_buf *b, const metrics_snap *sn)
{
    uint64_t now = srv_now_ms();
    uint64_t stale = 3ull * (sn->interval_ms > 0 ? sn->interval_ms : 1000);
    procstat ps;
    bool bad = false;

    procstat_read(&ps, 0);
    if (now > sn->taken_ms && now - sn->taken_ms > stale) {
        metrics_printf(b, "loop: no tick for %" PRIu64 " ms\n", now - sn->taken_ms);
        bad = true;
    }
    if (sn->smp.loop_lag_ms > sn->lag_limit_ms) {
        metrics_printf(b, "loop_lag: %" PRIu64 " ms > %" PRIu32 " ms\n", sn->smp.loop_lag_ms,
                       sn->lag_limit_ms);
        bad = true;
    }
    if (sn->rss_limit > 0 && ps.rss_bytes > sn->rss_limit) {
        metrics_printf(b, "memory: rss %" PRIu64 " > %" PRIu64 " bytes\n", ps.rss_bytes,
                       sn->rss_limit);
        bad = true;
    }
    if (sn->smp.store_present && !sn->smp.store_ok) {
        metrics_printf(b, "store: not writable (a commit failed or the write queue is full)\n");
        bad = true;
    }
    for (size_t i = 0; i < sn->n_agents; i++) {
        if (sn->agents[i].breaker == BUS_BREAKER_OPEN) {
            metrics_printf(b, "breaker: %s open\n", sn->agents[i].name);
            bad = true;
        }
    }
    if (sn->draining) {
        metrics_printf(b, "draining\n");
        bad = true;
    }
    if (!bad) {
        metrics_printf(b, "ok\n");
    }
    return bad ? NNG_HTTP_STATUS_SERVICE_UNAVAILABLE : NNG_HTTP_STATUS_OK;
}

/* ---- HTTP -------------------------------------------------------------------------------- */

static void metrics_respond(nng_aio *aio, bool health)
{
    nng_http_handler *h = nng_aio_get_input(aio, 1);
    metrics *m = nng_http_handler_get_data(h);
    metrics_snap *sn = metrics_snap_get(m);
    metrics_buf b = {NULL, 0, 0, false};
    nng_http_res *res = NULL;
    uint16_t status = NNG_HTTP_STATUS_OK;
    int rv;

    if (sn == NULL) {
        status = NNG_HTTP_STATUS_SERVICE_UNAVAILABLE;
        metrics_printf(&b, "loop: no snapshot yet\n");
    } else if (health) {
        status = metrics_health(&b, sn);
    } else {
        metrics_format(&b, sn);
    }
    metrics_snap_unref(sn);
    if (b.failed) {
        free(b.p);
        nng_aio_finish(aio, NNG_ENOMEM);
        return;
    }
    if ((rv = nng_http_res_alloc(&res)) != 0 || (rv = nng_http_res_set_status(res, status)) != 0 ||
        (rv = nng_http_res_set_header(res, "Content-Type",
                                      health ? "text/plain; charset=utf-8"
                                             : "text/plain; version=0.0.4; charset=utf-8")) != 0 ||
        (rv = nng_http_res_copy_data(res, b.p, b.len)) != 0) {
        nng_http_res_free(res);
        free(b.p);
        nng_aio_finish(aio, rv);
        return;
    }
    free(b.p);
    nng_aio_set_output(aio, 0, res);
    nng_aio_finish(aio, 0);
}

static void metrics_cb_metrics(nng_aio *aio)
{
    metrics_respond(aio, false);
}

static void metrics_cb_healthz(nng_aio *aio)
{
    metrics_respond(aio, true);
}

static int metrics_add(metrics *m, const char *path, void (*cb)(nng_aio *))
{
    nng_http_handler *h;
    int rv;

    if ((rv = nng_http_handler_alloc(&h, path, cb)) != 0) {
        return rv;
    }
    if ((rv = nng_http_handler_set_method(h, "GET")) != 0 ||
        (rv = nng_http_handler_set_data(h, m, NULL)) != 0 ||
        (rv = nng_http_server_add_handler(m->http, h)) != 0) {
        nng_http_handler_free(h);
        return rv;
    }
    return 0;
}

hsb_err metrics_start(srv *s, struct alerts *al, struct control *ctl, const char *bind,
                      unsigned port, metrics **out)
{
    metrics *m;
    nng_url *url = NULL;
    nng_sockaddr sa;
    char buf[128];
    int rv;

    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL) {
        return HSB_ENOMEM;
    }
    m->s = s;
    m->al = al;
    m->ctl = ctl;
    pthread_mutex_init(&m->lock, NULL);
    snprintf(buf, sizeof(buf), strchr(bind, ':') != NULL ? "http://[%s]:%u" : "http://%s:%u", bind,
             port);
    if ((rv = nng_url_parse(&url, buf)) != 0 || (rv = nng_http_server_hold(&m->http, url)) != 0) {
        goto fail;
    }
    if ((rv = metrics_add(m, "/metrics", metrics_cb_metrics)) != 0 ||
        (rv = metrics_add(m, "/healthz", metrics_cb_healthz)) != 0 ||
        (rv = nng_http_server_start(m->http)) != 0) {
        goto fail;
    }
    m->started = true;
    snprintf(m->url, sizeof(m->url), "%s", buf);
    /* With port 0 the kernel chose: report the port actually bound. */
    if (nng_http_server_get_addr(m->http, &sa) == 0 && sa.s_family == NNG_AF_INET) {
        snprintf(m->url, sizeof(m->url), "http://%s:%u", bind, (unsigned)ntohs(sa.s_in.sa_port));
    } else if (nng_http_server_get_addr(m->http, &sa) == 0 && sa.s_family == NNG_AF_INET6) {
        snprintf(m->url, sizeof(m->url), "http://[%s]:%u", bind, (unsigned)ntohs(sa.s_in6.sa_port));
    }
    nng_url_free(url);
    log_info("metrics_listening", "url=%s paths=/metrics,/healthz", m->url);
    *out = m;
    return HSB_OK;

fail:
    log_error("metrics_failed", "url=%s err=\"%s\"", buf, nng_strerror(rv));
    if (m->http != NULL) {
        nng_http_server_release(m->http);
    }
    nng_url_free(url);
    pthread_mutex_destroy(&m->lock);
    free(m);
    return rv == NNG_ENOMEM ? HSB_ENOMEM : HSB_EIO;
}

const char *metrics_url(const metrics *m)
{
    return m->url;
}

void metrics_stop(metrics *m)
{
    if (m == NULL || m->http == NULL) {
        return;
    }
    if (m->started) {
        nng_http_server_stop(m->http);
        m->started = false;
    }
    nng_http_server_release(m->http);
    m->http = NULL;
}

void metrics_free(metrics *m)
{
    if (m == NULL) {
        return;
    }
    metrics_snap_unref(m->cur);
    pthread_mutex_destroy(&m->lock);
    free(m);
}
