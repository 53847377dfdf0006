/*
 * daemon/alerts.c - the operator tick: sampling, rates, loop lag, alert rules (see alerts.h).
 *
 * Per agent the evaluator keeps the counters and the latency histogram seen at the previous tick,
 * so that latency and error rate are judged over the last interval rather than since start-up
 * (a daemon that was slow an hour ago is not slow now). Agents are never forgotten: the bus keeps
 * every agent it has seen, and so does this table.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "daemon/alerts.h"
#include "daemon/cmdtab.h"
#include "daemon/log.h"
#include "daemon/server.h"

#include "daemon/store/store.h"

typedef struct alerts_rstate {
    bool pending; /* the condition holds; since pending_ms */
    bool firing;
    uint64_t pending_ms;
    uint64_t since_ms;
    double value;
    double threshold;
} alerts_rstate;

typedef struct alerts_entry {
    char agent[HSB_NAME_MAX + 1];
    bool have_prev;
    bus_hist prev_hist;
    uint64_t prev_fail;
    uint64_t prev_att;
    uint64_t prev_delivered;
    uint64_t prev_acked;
    alerts_rstate r[ALERTS_RULE_COUNT];
} alerts_entry;

struct alerts {
    srv *s;
    uv_timer_t timer;
    uint32_t interval_ms;
    uint64_t last_ns;
    alerts_sample smp;
    bus_totals prev_totals;
    bool have_prev;
    alerts_entry global; /* process-wide rules (memory) */
    alerts_entry *ents;
    size_t n_ents, cap_ents;
    uint64_t store_prev_failed;  /* commits that failed, at the previous tick */
    uint64_t store_prev_refused; /* write jobs refused (queue full), at the previous tick */
    /* per-tick sums for the rates */
    uint64_t sum_delivered, sum_acked, sum_failed;
    alerts_tick_fn hook;
    void *hook_arg;
};

static const char *const alerts_rule_names[ALERTS_RULE_COUNT] = {
    "p99_latency_ms",
    "error_rate_pct",
    "queue_depth",
    "memory_rss_bytes",
};

const char *alerts_rule_name(alerts_rule r)
{
    return (unsigned)r < ALERTS_RULE_COUNT ? alerts_rule_names[r] : "unknown";
}

static alerts_entry *alerts_entry_get(alerts *al, const char *agent)
{
    for (size_t i = 0; i < al->n_ents; i++) {
        if (strcmp(al->ents[i].agent, agent) == 0) {
            return &al->ents[i];
        }
    }
    if (al->n_ents == al->cap_ents) {
        size_t cap = al->cap_ents ? al->cap_ents * 2 : 16;
        alerts_entry *n = realloc(al->ents, cap * sizeof(*n));
        if (n == NULL) {
            return NULL;
        }
        al->ents = n;
        al->cap_ents = cap;
    }
    alerts_entry *e = &al->ents[al->n_ents++];
    memset(e, 0, sizeof(*e));
    snprintf(e->agent, sizeof(e->agent), "%s", agent);
    return e;
}

/* alerts_publish sends {rule, agent, state, value, threshold, ts} on topic sys.alerts. */
static void alerts_publish(alerts *al, alerts_rule rule, const char *agent, const char *state,
                           const alerts_rstate *r, uint64_t now)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    hsb_envelope env;
    hsb_send_result res;
    bool pending = false;
    hsb_err err;

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 6);
    msgpack_pack_str_with_body(&pk, "rule", 4);
    msgpack_pack_str_with_body(&pk, alerts_rule_name(rule), strlen(alerts_rule_name(rule)));
    msgpack_pack_str_with_body(&pk, "agent", 5);
    msgpack_pack_str_with_body(&pk, agent, strlen(agent));
    msgpack_pack_str_with_body(&pk, "state", 5);
    msgpack_pack_str_with_body(&pk, state, strlen(state));
    msgpack_pack_str_with_body(&pk, "value", 5);
    msgpack_pack_double(&pk, r->value);
    msgpack_pack_str_with_body(&pk, "threshold", 9);
    msgpack_pack_double(&pk, r->threshold);
    msgpack_pack_str_with_body(&pk, "ts", 2);
    msgpack_pack_uint64(&pk, now);

    memset(&env, 0, sizeof(env));
    snprintf(env.topic, sizeof(env.topic), "sys.alerts");
    snprintf(env.type, sizeof(env.type), "sys.alert");
    env.prio = HSB_PRIO_HIGH;
    env.body = (const uint8_t *)sb.data;
    env.body_len = sb.size;
    memset(&res, 0, sizeof(res));
    err = bus_send(al->s->bus, NULL, &env, 1, &res, NULL, &pending);
    if (err != HSB_OK || res.err != HSB_OK) {
        /* No subscriber is the common case: nothing to do. */
        log_debug("alert_not_published", "rule=%s agent=%s err=%s", alerts_rule_name(rule),
                  agent[0] ? agent : "-", hsb_err_name(err != HSB_OK ? err : res.err));
    }
    msgpack_sbuffer_destroy(&sb);
}

static void alerts_update(alerts *al, alerts_rule rule, alerts_entry *e, bool cond, double value,
                          double threshold, uint64_t now)
{
    alerts_rstate *r = &e->r[rule];
    const char *agent = e->agent[0] ? e->agent : "-";

    r->value = value;
    r->threshold = threshold;
    if (!cond) {
        r->pending = false;
        if (r->firing) {
            r->firing = false;
            log_info("alert_resolved", "rule=%s agent=%s value=%.3f threshold=%.3f",
                     alerts_rule_name(rule), agent, value, threshold);
            alerts_publish(al, rule, e->agent, "resolved", r, now);
        }
        return;
    }
    if (!r->pending) {
        r->pending = true;
        r->pending_ms = now;
    }
    if (!r->firing && now - r->pending_ms >= al->s->cfg.alert_for_ms) {
        r->firing = true;
        r->since_ms = now;
        log_warn("alert_firing", "rule=%s agent=%s value=%.3f threshold=%.3f for_ms=%" PRIu32,
                 alerts_rule_name(rule), agent, value, threshold, al->s->cfg.alert_for_ms);
        alerts_publish(al, rule, e->agent, "firing", r, now);
    }
}

typedef struct alerts_walk {
    alerts *al;
    uint64_t now;
} alerts_walk;

static void alerts_eval_agent(void *arg, const bus_agent_stats *st)
{
    alerts_walk *w = arg;
    alerts *al = w->al;
    const config *cfg = &al->s->cfg;
    alerts_entry *e = alerts_entry_get(al, st->name);
    uint64_t fail = st->nacked + st->expired + st->rejected_busy + st->rejected_breaker;
    uint64_t att = st->delivered + st->rejected_busy + st->rejected_breaker;
    uint64_t queued = 0;
    bus_hist d;
    double p99 = 0, pct = 0;
    uint64_t dfail = 0, datt = 0;

    if (e == NULL) {
        return;
    }
    for (int i = 0; i < HSB_PRIO_COUNT; i++) {
        queued += st->queued[i];
    }
    memset(&d, 0, sizeof(d));
    if (e->have_prev) {
        for (int i = 0; i <= BUS_HIST_BUCKETS; i++) {
            d.counts[i] = st->latency.counts[i] - e->prev_hist.counts[i];
        }
        d.count = st->latency.count - e->prev_hist.count;
        d.sum_us = st->latency.sum_us - e->prev_hist.sum_us;
        dfail = fail - e->prev_fail;
        datt = att - e->prev_att;
        al->sum_delivered += st->delivered - e->prev_delivered;
        al->sum_acked += st->acked - e->prev_acked;
        al->sum_failed += dfail;
    }
    if (d.count > 0) {
        p99 = (double)bus_hist_quantile(&d, 0.99) / 1000.0;
    }
    if (datt > 0) {
        pct = 100.0 * (double)dfail / (double)datt;
    }
    alerts_update(al, ALERTS_P99, e,
                  cfg->alert_p99_ms > 0 && d.count > 0 && p99 > cfg->alert_p99_ms, p99,
                  cfg->alert_p99_ms, w->now);
    /* At least 10 attempts in the interval, so one nack out of two is not a 50% alert. */
    alerts_update(al, ALERTS_ERROR_RATE, e,
                  cfg->alert_error_pct > 0 && datt >= 10 && pct > cfg->alert_error_pct, pct,
                  cfg->alert_error_pct, w->now);
    alerts_update(al, ALERTS_QUEUE_DEPTH, e,
                  cfg->alert_queue_depth > 0 && queued > cfg->alert_queue_depth, (double)queued,
                  cfg->alert_queue_depth, w->now);

    e->prev_hist = st->latency;
    e->prev_fail = fail;
    e->prev_att = att;
    e->prev_delivered = st->delivered;
    e->prev_acked = st->acked;
    e->have_prev = true;
}

static void alerts_sample_store(alerts *al)
{
    al->smp.store_present = al->s->store != NULL;
    al->smp.store_ok = al->s->store != NULL;
    if (al->s->store != NULL) {
        store_stats st;
        store_stats_get(al->s->store, &st);
        /* Writable: no commit failed and no write job was refused for a full queue (a stuck
         * writer) since the previous tick. */
        al->smp.store_ok = st.pool.groups_failed == al->store_prev_failed &&
                           st.pool.refused_busy == al->store_prev_refused;
        al->store_prev_failed = st.pool.groups_failed;
        al->store_prev_refused = st.pool.refused_busy;
    }
}

static void alerts_tick(alerts *al)
{
    srv *s = al->s;
    uint64_t now = srv_now_ms();
    uint64_t now_ns = uv_hrtime();
    alerts_walk w = {al, now};
    bus_totals t;
    double dt;

    if (al->last_ns != 0) {
        uint64_t elapsed_ms = (now_ns - al->last_ns) / 1000000u;
        al->smp.loop_lag_ms = elapsed_ms > al->interval_ms ? elapsed_ms - al->interval_ms : 0;
        if (al->smp.loop_lag_ms > al->smp.loop_lag_max_ms) {
            al->smp.loop_lag_max_ms = al->smp.loop_lag_ms;
        }
    }
    dt = al->last_ns != 0 ? (double)(now_ns - al->last_ns) / 1e9 : 0;
    al->last_ns = now_ns;

    procstat_read(&al->smp.proc, 0);
    alerts_sample_store(al);

    al->sum_delivered = al->sum_acked = al->sum_failed = 0;
    bus_foreach_agent(s->bus, alerts_eval_agent, &w);
    bus_totals_get(s->bus, &t);
    if (al->have_prev && dt > 0) {
        al->smp.routed_per_s = (double)(t.routed - al->prev_totals.routed) / dt;
        al->smp.delivered_per_s = (double)al->sum_delivered / dt;
        al->smp.acked_per_s = (double)al->sum_acked / dt;
        al->smp.failed_per_s = (double)al->sum_failed / dt;
    }
    al->prev_totals = t;
    al->have_prev = true;

    alerts_update(al, ALERTS_MEMORY, &al->global,
                  s->cfg.alert_rss_bytes > 0 && al->smp.proc.rss_bytes > s->cfg.alert_rss_bytes,
                  (double)al->smp.proc.rss_bytes, (double)s->cfg.alert_rss_bytes, now);
    al->smp.taken_ms = now;

    if (al->hook != NULL) {
        al->hook(al->hook_arg);
    }
}

static void alerts_timer_cb(uv_timer_t *h)
{
    alerts *al = h->data;

    alerts_tick(al);
    if (al->s->cfg.alert_interval_ms != al->interval_ms) {
        /* A reload changed the interval: re-arm (the next lag reading restarts from now). */
        al->interval_ms = al->s->cfg.alert_interval_ms;
        uv_timer_start(&al->timer, alerts_timer_cb, al->interval_ms, al->interval_ms);
        al->last_ns = uv_hrtime();
        log_info("alerts_interval", "interval_ms=%" PRIu32, al->interval_ms);
    }
}

hsb_err alerts_start(srv *s, alerts **out)
{
    alerts *al = calloc(1, sizeof(*al));

    *out = NULL;
    if (al == NULL) {
        return HSB_ENOMEM;
    }
    al->s = s;
    al->interval_ms = s->cfg.alert_interval_ms > 0 ? s->cfg.alert_interval_ms : 1000;
    if (uv_timer_init(&s->loop, &al->timer) != 0) {
        free(al);
        return HSB_EIO;
    }
    al->timer.data = al;
    uv_timer_start(&al->timer, alerts_timer_cb, al->interval_ms, al->interval_ms);
    al->last_ns = uv_hrtime();
    procstat_read(&al->smp.proc, 0);
    alerts_sample_store(al);
    *out = al;
    return HSB_OK;
}

void alerts_set_tick_hook(alerts *al, alerts_tick_fn fn, void *arg)
{
    al->hook = fn;
    al->hook_arg = arg;
    if (fn != NULL) {
        fn(arg);
    }
}

void alerts_sample_get(const alerts *al, alerts_sample *out)
{
    *out = al->smp;
}

static size_t alerts_collect(const alerts_entry *e, alerts_state *out, size_t max, size_t n)
{
    for (int r = 0; r < ALERTS_RULE_COUNT; r++) {
        if (!e->r[r].firing) {
            continue;
        }
        if (n < max) {
            alerts_state *o = &out[n];
            o->rule = (alerts_rule)r;
            snprintf(o->agent, sizeof(o->agent), "%s", e->agent);
            o->value = e->r[r].value;
            o->threshold = e->r[r].threshold;
            o->since_ms = e->r[r].since_ms;
        }
        n++;
    }
    return n;
}

size_t alerts_firing(const alerts *al, alerts_state *out, size_t max)
{
    size_t n = alerts_collect(&al->global, out, max, 0);

    for (size_t i = 0; i < al->n_ents; i++) {
        n = alerts_collect(&al->ents[i], out, max, n);
    }
    return n;
}

static void alerts_close_cb(uv_handle_t *h)
{
    (void)h;
}

void alerts_stop(alerts *al)
{
    if (al != NULL && !uv_is_closing((uv_handle_t *)&al->timer)) {
        uv_close((uv_handle_t *)&al->timer, alerts_close_cb);
    }
}

void alerts_free(alerts *al)
{
    if (al == NULL) {
        return;
    }
    free(al->ents);
    free(al);
}
