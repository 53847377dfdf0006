/*
 * daemon/cmdtab.c - the command table and, in the daemon, its handlers.
 *
 * Compiled twice: into hsbusd (handlers included) and into hsbusctl with CMDTAB_CLIENT defined
 * (table only, every handler NULL), so the CLI's help and the daemon's dispatch are one list.
 *
 * Handlers build the reply's data with msgpack: scalars in maps, tables as arrays of maps whose
 * keys are the column names (hsbusctl renders those generically). Loop handlers read the bus and
 * the config directly (they run on the loop thread); CMDTAB_WORKER handlers may block on the store
 * and touch nothing else that the loop owns.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/cmdtab.h"

#ifdef CMDTAB_CLIENT
#define CMDTAB_FN(f) NULL
#else
#define CMDTAB_FN(f) f
#include <unistd.h>

#include "daemon/alerts.h"
#include "daemon/control.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "proto/codec.h"
#include "daemon/store/store.h"

#define CMDTAB_DECL(name, sub, args, min, max, flags, help, fn)                                    \
    static hsb_err fn(cmdtab_call *call);
CMDTAB_COMMANDS(CMDTAB_DECL)
#endif

#define CMDTAB_ROW(name, sub, args, min, max, flags, help, fn)                                     \
    {name, sub, args, min, max, flags, help, CMDTAB_FN(fn)},
const cmdtab_entry cmdtab[] = {CMDTAB_COMMANDS(CMDTAB_ROW)};
const size_t cmdtab_count = sizeof(cmdtab) / sizeof(cmdtab[0]);

const cmdtab_entry *cmdtab_find(const char *cmd, const char *const *args, size_t n_args,
                                size_t *rest, bool *known)
{
    *rest = 0;
    *known = false;
    for (size_t i = 0; i < cmdtab_count; i++) {
        const cmdtab_entry *e = &cmdtab[i];
        if (strcmp(e->name, cmd) != 0) {
            continue;
        }
        *known = true;
        if (e->sub == NULL) {
            return e;
        }
        if (n_args > 0 && args[0] != NULL && strcmp(args[0], e->sub) == 0) {
            *rest = 1;
            return e;
        }
    }
    return NULL;
}

void cmdtab_usage(const cmdtab_entry *e, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s%s%s%s", e->name, e->sub != NULL ? " " : "",
             e->sub != NULL ? e->sub : "", e->args[0] != '\0' ? " " : "", e->args);
}

#ifndef CMDTAB_CLIENT

/* ---- packing helpers --------------------------------------------------------------------- */

static void cmdtab_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void cmdtab_kv_str(msgpack_packer *pk, const char *k, const char *v)
{
    cmdtab_str(pk, k);
    cmdtab_str(pk, v);
}

static void cmdtab_kv_u64(msgpack_packer *pk, const char *k, uint64_t v)
{
    cmdtab_str(pk, k);
    msgpack_pack_uint64(pk, v);
}

static void cmdtab_kv_f64(msgpack_packer *pk, const char *k, double v)
{
    cmdtab_str(pk, k);
    msgpack_pack_double(pk, v);
}

static void cmdtab_kv_bool(msgpack_packer *pk, const char *k, bool v)
{
    cmdtab_str(pk, k);
    if (v) {
        msgpack_pack_true(pk);
    } else {
        msgpack_pack_false(pk);
    }
}

/* Round to 3 decimals so tables stay readable; JSON keeps the same value. */
static double cmdtab_ms(uint64_t us)
{
    return (double)(us / 1000u) + (double)((us % 1000u)) / 1000.0;
}

static double cmdtab_round(double v)
{
    return (double)(int64_t)(v * 100.0 + (v >= 0 ? 0.5 : -0.5)) / 100.0;
}

/* Every agent's snapshot, in name order. */
typedef struct cmdtab_agents_v {
    bus_agent_stats *v;
    size_t n, cap;
    bool failed;
} cmdtab_agents_v;

static void cmdtab_collect_cb(void *arg, const bus_agent_stats *st)
{
    cmdtab_agents_v *a = arg;
    if (a->failed) {
        return;
    }
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 8;
        bus_agent_stats *v = realloc(a->v, cap * sizeof(*v));
        if (v == NULL) {
            a->failed = true;
            return;
        }
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = *st;
}

static hsb_err cmdtab_collect(cmdtab_call *call, cmdtab_agents_v *a)
{
    memset(a, 0, sizeof(*a));
    bus_foreach_agent(call->s->bus, cmdtab_collect_cb, a);
    if (a->failed) {
        free(a->v);
        snprintf(call->msg, sizeof(call->msg), "out of memory");
        return HSB_ENOMEM;
    }
    return HSB_OK;
}

/* The settings in force for an agent: its own section, else the [bus] defaults. */
static const bus_agent_config *cmdtab_agent_conf(const srv *s, const char *name)
{
    const config_agent *a = config_agent_find(&s->cfg, name);
    return a != NULL ? &a->bus : &s->cfg.bus.agent_defaults;
}

static uint64_t cmdtab_queued(const bus_agent_stats *st)
{
    uint64_t q = 0;
    for (int i = 0; i < HSB_PRIO_COUNT; i++) {
        q += st->queued[i];
    }
    return q;
}

static const char *cmdtab_store_state(const alerts_sample *smp)
{
    if (!smp->store_present) {
        return "absent";
    }
    return smp->store_ok ? "ok" : "failing";
}

/* ---- views ------------------------------------------------------------------------------- */

static hsb_err cmdtab_status(cmdtab_call *call)
{
    srv *s = call->s;
    msgpack_packer *pk = call->pk;
    cmdtab_agents_v a;
    alerts_sample smp;
    alerts_state firing[32];
    size_t n_firing, n_open = 0;
    bus_totals t;
    hsb_err err = cmdtab_collect(call, &a);

    if (err != HSB_OK) {
        return err;
    }
    bus_totals_get(s->bus, &t);
    alerts_sample_get(call->al, &smp);
    n_firing = alerts_firing(call->al, firing, 32);
    if (n_firing > 32) {
        n_firing = 32;
    }
    for (size_t i = 0; i < a.n; i++) {
        n_open += a.v[i].breaker != BUS_BREAKER_CLOSED;
    }

    msgpack_pack_map(pk, 18);
    cmdtab_kv_str(pk, "version", HSB_VERSION);
    cmdtab_kv_u64(pk, "pid", (uint64_t)getpid());
    cmdtab_kv_u64(pk, "uptime_s", (srv_now_ms() - s->start_ms) / 1000u);
    cmdtab_kv_str(pk, "state", s->draining ? "draining" : "running");
    cmdtab_kv_u64(pk, "agents", a.n);
    cmdtab_kv_u64(pk, "clients", t.clients);
    cmdtab_kv_u64(pk, "queued", t.queued);
    cmdtab_kv_u64(pk, "in_flight", t.in_flight);
    cmdtab_kv_f64(pk, "routed_per_s", cmdtab_round(smp.routed_per_s));
    cmdtab_kv_f64(pk, "delivered_per_s", cmdtab_round(smp.delivered_per_s));
    cmdtab_kv_f64(pk, "acked_per_s", cmdtab_round(smp.acked_per_s));
    cmdtab_kv_f64(pk, "failed_per_s", cmdtab_round(smp.failed_per_s));
    cmdtab_kv_u64(pk, "loop_lag_ms", smp.loop_lag_ms);
    cmdtab_kv_u64(pk, "rss_bytes", smp.proc.rss_bytes);
    cmdtab_kv_str(pk, "store", cmdtab_store_state(&smp));
    cmdtab_kv_u64(pk, "log_lines_error", log_count(HSB_LOG_ERROR));

    cmdtab_str(pk, "breakers_not_closed");
    msgpack_pack_array(pk, n_open);
    for (size_t i = 0; i < a.n; i++) {
        if (a.v[i].breaker != BUS_BREAKER_CLOSED) {
            msgpack_pack_map(pk, 2);
            cmdtab_kv_str(pk, "agent", a.v[i].name);
            cmdtab_kv_str(pk, "state", bus_breaker_state_name(a.v[i].breaker));
        }
    }
    cmdtab_str(pk, "alerts_firing");
    msgpack_pack_array(pk, n_firing);
    for (size_t i = 0; i < n_firing; i++) {
        msgpack_pack_map(pk, 5);
        cmdtab_kv_str(pk, "rule", alerts_rule_name(firing[i].rule));
        cmdtab_kv_str(pk, "agent", firing[i].agent[0] ? firing[i].agent : "-");
        cmdtab_kv_f64(pk, "value", cmdtab_round(firing[i].value));
        cmdtab_kv_f64(pk, "threshold", firing[i].threshold);
        cmdtab_kv_u64(pk, "for_s", (srv_now_ms() - firing[i].since_ms) / 1000u);
    }
    free(a.v);
    return HSB_OK;
}

static hsb_err cmdtab_agents(cmdtab_call *call)
{
    msgpack_packer *pk = call->pk;
    cmdtab_agents_v a;
    hsb_err err = cmdtab_collect(call, &a);

    if (err != HSB_OK) {
        return err;
    }
    msgpack_pack_array(pk, a.n);
    for (size_t i = 0; i < a.n; i++) {
        const bus_agent_stats *st = &a.v[i];
        msgpack_pack_map(pk, 13);
        cmdtab_kv_str(pk, "agent", st->name);
        cmdtab_kv_u64(pk, "instances", st->instances);
        cmdtab_kv_u64(pk, "queued", cmdtab_queued(st));
        cmdtab_kv_u64(pk, "in_flight", st->in_flight);
        cmdtab_kv_u64(pk, "received", st->received);
        cmdtab_kv_u64(pk, "delivered", st->delivered);
        cmdtab_kv_u64(pk, "acked", st->acked);
        cmdtab_kv_u64(pk, "nacked", st->nacked);
        cmdtab_kv_u64(pk, "expired", st->expired);
        cmdtab_kv_u64(pk, "dead", st->dead_lettered);
        cmdtab_kv_f64(pk, "p50_ms", cmdtab_ms(bus_hist_quantile(&st->latency, 0.5)));
        cmdtab_kv_f64(pk, "p99_ms", cmdtab_ms(bus_hist_quantile(&st->latency, 0.99)));
        cmdtab_kv_str(pk, "breaker", bus_breaker_state_name(st->breaker));
    }
    free(a.v);
    return HSB_OK;
}

static hsb_err cmdtab_queues(cmdtab_call *call)
{
    msgpack_packer *pk = call->pk;
    cmdtab_agents_v a;
    hsb_err err = cmdtab_collect(call, &a);

    if (err != HSB_OK) {
        return err;
    }
    msgpack_pack_array(pk, a.n);
    for (size_t i = 0; i < a.n; i++) {
        const bus_agent_stats *st = &a.v[i];
        const bus_agent_config *ac = cmdtab_agent_conf(call->s, st->name);
        msgpack_pack_map(pk, 11);
        cmdtab_kv_str(pk, "agent", st->name);
        cmdtab_kv_u64(pk, "critical", st->queued[HSB_PRIO_CRITICAL]);
        cmdtab_kv_u64(pk, "high", st->queued[HSB_PRIO_HIGH]);
        cmdtab_kv_u64(pk, "normal", st->queued[HSB_PRIO_NORMAL]);
        cmdtab_kv_u64(pk, "low", st->queued[HSB_PRIO_LOW]);
        cmdtab_kv_u64(pk, "total", cmdtab_queued(st));
        cmdtab_kv_u64(pk, "bytes", st->queued_bytes);
        cmdtab_kv_u64(pk, "in_flight", st->in_flight);
        cmdtab_kv_u64(pk, "parked", st->parked_fetches);
        cmdtab_kv_u64(pk, "max_msgs", ac->queue_max_msgs);
        cmdtab_kv_u64(pk, "max_bytes", ac->queue_max_bytes);
    }
    free(a.v);
    return HSB_OK;
}

static hsb_err cmdtab_breakers(cmdtab_call *call)
{
    msgpack_packer *pk = call->pk;
    uint64_t now = srv_now_ms();
    cmdtab_agents_v a;
    hsb_err err = cmdtab_collect(call, &a);

    if (err != HSB_OK) {
        return err;
    }
    msgpack_pack_array(pk, a.n);
    for (size_t i = 0; i < a.n; i++) {
        const bus_agent_stats *st = &a.v[i];
        const bus_breaker_config *bc = &cmdtab_agent_conf(call->s, st->name)->breaker;
        msgpack_pack_map(pk, 9);
        cmdtab_kv_str(pk, "agent", st->name);
        cmdtab_kv_str(pk, "state", bus_breaker_state_name(st->breaker));
        cmdtab_kv_bool(pk, "forced", st->breaker_forced);
        cmdtab_kv_u64(pk, "failures", st->breaker_consecutive_failures);
        cmdtab_kv_u64(pk, "threshold", bc->failure_threshold);
        cmdtab_kv_u64(pk, "rate_pct", bc->rate_threshold_pct);
        cmdtab_kv_u64(pk, "recovery_ms", bc->recovery_timeout_ms);
        cmdtab_kv_u64(pk, "transitions", st->breaker_transitions);
        cmdtab_kv_u64(pk, "open_for_s",
                      st->breaker_opened_at_ms != 0 && now > st->breaker_opened_at_ms
                          ? (now - st->breaker_opened_at_ms) / 1000u
                          : 0);
    }
    free(a.v);
    return HSB_OK;
}

static hsb_err cmdtab_stats(cmdtab_call *call)
{
    srv *s = call->s;
    msgpack_packer *pk = call->pk;
    cmdtab_agents_v a;
    alerts_sample smp;
    bus_totals t;
    gw_stats g;
    hsb_err err = cmdtab_collect(call, &a);

    if (err != HSB_OK) {
        return err;
    }
    bus_totals_get(s->bus, &t);
    gw_stats_get(s->gw, &g);
    alerts_sample_get(call->al, &smp);

    msgpack_pack_map(pk, 5);
    cmdtab_str(pk, "totals");
    msgpack_pack_map(pk, 12);
    cmdtab_kv_u64(pk, "routed", t.routed);
    cmdtab_kv_u64(pk, "no_route", t.no_route);
    cmdtab_kv_u64(pk, "busy", t.busy);
    cmdtab_kv_u64(pk, "expired", t.expired);
    cmdtab_kv_u64(pk, "dead_lettered", t.dead_lettered);
    cmdtab_kv_u64(pk, "duplicates", t.duplicates);
    cmdtab_kv_u64(pk, "displaced", t.displaced);
    cmdtab_kv_u64(pk, "rejected_breaker", t.rejected_breaker);
    cmdtab_kv_u64(pk, "sys_errors_dropped", t.sys_errors_dropped);
    cmdtab_kv_u64(pk, "queued", t.queued);
    cmdtab_kv_u64(pk, "in_flight", t.in_flight);
    cmdtab_kv_u64(pk, "clients", t.clients);

    cmdtab_str(pk, "gateway");
    msgpack_pack_map(pk, 6);
    cmdtab_kv_u64(pk, "requests", g.requests);
    cmdtab_kv_u64(pk, "bad_requests", g.bad_requests);
    cmdtab_kv_u64(pk, "connections", g.connections);
    cmdtab_kv_u64(pk, "open_connections", g.open_connections);
    cmdtab_kv_u64(pk, "contexts", g.contexts);
    cmdtab_kv_u64(pk, "parked", g.parked);

    cmdtab_str(pk, "process");
    msgpack_pack_map(pk, 5);
    cmdtab_kv_u64(pk, "rss_bytes", smp.proc.rss_bytes);
    cmdtab_kv_f64(pk, "cpu_seconds", cmdtab_round(smp.proc.cpu_seconds));
    cmdtab_kv_u64(pk, "threads", smp.proc.threads);
    cmdtab_kv_u64(pk, "loop_lag_ms", smp.loop_lag_ms);
    cmdtab_kv_u64(pk, "loop_lag_max_ms", smp.loop_lag_max_ms);

    cmdtab_str(pk, "log_lines");
    msgpack_pack_map(pk, 4);
    cmdtab_kv_u64(pk, "debug", log_count(HSB_LOG_DEBUG));
    cmdtab_kv_u64(pk, "info", log_count(HSB_LOG_INFO));
    cmdtab_kv_u64(pk, "warn", log_count(HSB_LOG_WARN));
    cmdtab_kv_u64(pk, "error", log_count(HSB_LOG_ERROR));

    cmdtab_str(pk, "agents");
    msgpack_pack_array(pk, a.n);
    for (size_t i = 0; i < a.n; i++) {
        const bus_agent_stats *st = &a.v[i];
        msgpack_pack_map(pk, 14);
        cmdtab_kv_str(pk, "agent", st->name);
        cmdtab_kv_u64(pk, "received", st->received);
        cmdtab_kv_u64(pk, "delivered", st->delivered);
        cmdtab_kv_u64(pk, "acked", st->acked);
        cmdtab_kv_u64(pk, "nacked", st->nacked);
        cmdtab_kv_u64(pk, "redelivered", st->redelivered);
        cmdtab_kv_u64(pk, "expired", st->expired);
        cmdtab_kv_u64(pk, "dead_lettered", st->dead_lettered);
        cmdtab_kv_u64(pk, "rejected_busy", st->rejected_busy);
        cmdtab_kv_u64(pk, "rejected_breaker", st->rejected_breaker);
        cmdtab_kv_u64(pk, "sent", st->sent);
        cmdtab_kv_f64(pk, "p50_ms", cmdtab_ms(bus_hist_quantile(&st->latency, 0.5)));
        cmdtab_kv_f64(pk, "p90_ms", cmdtab_ms(bus_hist_quantile(&st->latency, 0.9)));
        cmdtab_kv_f64(pk, "p99_ms", cmdtab_ms(bus_hist_quantile(&st->latency, 0.99)));
    }
    free(a.v);
    return HSB_OK;
}

/* ---- actions ----------------------------------------------------------------------------- */

static hsb_err cmdtab_breaker(cmdtab_call *call)
{
    const char *sub = call->entry->sub;
    const char *name = call->args[0];
    bus_breaker_action act = strcmp(sub, "open") == 0    ? BUS_BREAKER_FORCE_OPEN
                             : strcmp(sub, "close") == 0 ? BUS_BREAKER_FORCE_CLOSE
                                                         : BUS_BREAKER_RESET;
    bus_agent_stats st;
    hsb_err err = bus_breaker_force(call->s->bus, name, act);

    if (err == HSB_ENOTFOUND) {
        snprintf(call->msg, sizeof(call->msg), "unknown agent \"%.64s\"", name);
        return err;
    }
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "breaker %s %.64s: %s", sub, name,
                 hsb_strerror(err));
        return err;
    }
    log_warn("breaker_forced", "agent=%s action=%s", name, sub);
    msgpack_pack_map(call->pk, 3);
    cmdtab_kv_str(call->pk, "agent", name);
    if (bus_agent_stats_get(call->s->bus, name, &st) == HSB_OK) {
        cmdtab_kv_str(call->pk, "state", bus_breaker_state_name(st.breaker));
        cmdtab_kv_bool(call->pk, "forced", st.breaker_forced);
    } else {
        cmdtab_kv_str(call->pk, "state", "unknown");
        cmdtab_kv_bool(call->pk, "forced", act != BUS_BREAKER_RESET);
    }
    return HSB_OK;
}

static hsb_err cmdtab_drain(cmdtab_call *call)
{
    srv_begin_drain(call->s);
    msgpack_pack_map(call->pk, 2);
    cmdtab_kv_bool(call->pk, "draining", true);
    cmdtab_kv_u64(call->pk, "timeout_ms", call->s->cfg.drain_timeout_ms);
    return HSB_OK;
}

/* cmdtab_pack_list packs "a,b,c" (or "-") as an array of strings. */
static void cmdtab_pack_list(msgpack_packer *pk, const char *list)
{
    size_t n = 0;
    const char *p;

    if (strcmp(list, "-") == 0 || list[0] == '\0') {
        msgpack_pack_array(pk, 0);
        return;
    }
    n = 1;
    for (p = list; *p != '\0'; p++) {
        n += *p == ',';
    }
    msgpack_pack_array(pk, n);
    for (p = list;;) {
        const char *c = strchr(p, ',');
        size_t len = c != NULL ? (size_t)(c - p) : strlen(p);
        msgpack_pack_str_with_body(pk, p, len);
        if (c == NULL) {
            break;
        }
        p = c + 1;
    }
}

static hsb_err cmdtab_reload(cmdtab_call *call)
{
    char report[1024];
    char *applied, *restart;

    /* config_load reads one small file: the only file I/O a command does on the loop. */
    if (srv_reload(call->s, report, sizeof(report)) != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "reload refused, config unchanged: %.200s", report);
        return HSB_EINVAL;
    }
    /* report: "applied=a,b restart_needed=c" */
    applied = strstr(report, "applied=");
    restart = strstr(report, " restart_needed=");
    if (restart != NULL) {
        *restart = '\0';
        restart += strlen(" restart_needed=");
    }
    msgpack_pack_map(call->pk, 3);
    cmdtab_kv_str(call->pk, "file", call->s->cfg.file[0] ? call->s->cfg.file : "-");
    cmdtab_str(call->pk, "applied");
    cmdtab_pack_list(call->pk, applied != NULL ? applied + strlen("applied=") : "-");
    cmdtab_str(call->pk, "restart_needed");
    cmdtab_pack_list(call->pk, restart != NULL ? restart : "-");
    return HSB_OK;
}

static hsb_err cmdtab_log_level(cmdtab_call *call)
{
    int lv = log_level_parse(call->args[0]);
    hsb_log_level old = log_get_level();

    if (lv < 0) {
        snprintf(call->msg, sizeof(call->msg),
                 "unknown level \"%.32s\": use debug, info, warn or error", call->args[0]);
        return HSB_EINVAL;
    }
    log_set_level((hsb_log_level)lv);
    log_write(HSB_LOG_WARN, "log_level", "from=%s to=%s", log_level_name(old),
              log_level_name((hsb_log_level)lv));
    msgpack_pack_map(call->pk, 2);
    cmdtab_kv_str(call->pk, "previous", log_level_name(old));
    cmdtab_kv_str(call->pk, "level", log_level_name((hsb_log_level)lv));
    return HSB_OK;
}

/* ---- store commands (worker thread) ------------------------------------------------------ */

static bool cmdtab_parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (s == NULL || *s < '0' || *s > '9') {
        return false;
    }
    v = strtoull(s, &end, 10);
    if (*end != '\0') {
        return false;
    }
    *out = v;
    return true;
}

static hsb_err cmdtab_no_store(cmdtab_call *call)
{
    if (call->s->store != NULL) {
        return HSB_OK;
    }
    snprintf(call->msg, sizeof(call->msg), "store not available ([store] enabled = false)");
    return HSB_EIO;
}

/* A dead letter's envelope fields, from its stored encoding. */
static void cmdtab_pack_env_fields(msgpack_packer *pk, const hsb_envelope *env, bool ok)
{
    cmdtab_kv_str(pk, "from", ok ? env->from : "?");
    cmdtab_kv_str(pk, "to", ok ? env->to : "?");
    cmdtab_kv_str(pk, "type", ok ? env->type : "?");
    cmdtab_kv_str(pk, "topic", ok ? env->topic : "?");
}

typedef struct cmdtab_dlq_walk {
    msgpack_sbuffer rows;
    msgpack_packer pk;
    hsb_dec dec;
    size_t n;
} cmdtab_dlq_walk;

static bool cmdtab_dlq_row(void *arg, const store_dlq_rec *rec)
{
    cmdtab_dlq_walk *w = arg;
    hsb_envelope env;
    bool ok;

    hsb_dec_reset(&w->dec);
    ok = hsb_dec_envelope(&w->dec, rec->envelope, rec->envelope_len, &env) == HSB_OK;
    msgpack_pack_map(&w->pk, 10);
    cmdtab_kv_u64(&w->pk, "id", rec->id);
    cmdtab_kv_u64(&w->pk, "msg_id", rec->msg_id);
    cmdtab_kv_str(&w->pk, "agent", rec->agent != NULL ? rec->agent : "");
    cmdtab_kv_str(&w->pk, "reason", rec->reason != NULL ? rec->reason : "");
    cmdtab_kv_u64(&w->pk, "deliveries", rec->deliveries);
    cmdtab_kv_u64(&w->pk, "ts", rec->ts);
    cmdtab_pack_env_fields(&w->pk, &env, ok);
    w->n++;
    return true;
}

static hsb_err cmdtab_dlq_list(cmdtab_call *call)
{
    uint64_t after = 0, limit = 100;
    cmdtab_dlq_walk w;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    if ((call->n_args > 0 && !cmdtab_parse_u64(call->args[0], &after)) ||
        (call->n_args > 1 &&
         (!cmdtab_parse_u64(call->args[1], &limit) || limit == 0 || limit > 10000))) {
        snprintf(call->msg, sizeof(call->msg),
                 "usage: dlq list [AFTER_ID [LIMIT]] (numbers; LIMIT 1..10000)");
        return HSB_EINVAL;
    }
    memset(&w, 0, sizeof(w));
    msgpack_sbuffer_init(&w.rows);
    msgpack_packer_init(&w.pk, &w.rows, msgpack_sbuffer_write);
    if (hsb_dec_init(&w.dec) != HSB_OK) {
        msgpack_sbuffer_destroy(&w.rows);
        return HSB_ENOMEM;
    }
    err = store_dlq_list(call->s->store, after, (size_t)limit, cmdtab_dlq_row, &w);
    if (err == HSB_OK) {
        msgpack_pack_array(call->pk, w.n);
        call->pk->callback(call->pk->data, w.rows.data, w.rows.size);
    } else {
        snprintf(call->msg, sizeof(call->msg), "dlq list: %s", hsb_strerror(err));
    }
    hsb_dec_fini(&w.dec);
    msgpack_sbuffer_destroy(&w.rows);
    return err;
}

typedef struct cmdtab_dlq_one {
    cmdtab_call *call;
    hsb_dec dec;
    bool found;
} cmdtab_dlq_one;

static bool cmdtab_dlq_show_row(void *arg, const store_dlq_rec *rec)
{
    cmdtab_dlq_one *o = arg;
    msgpack_packer *pk = o->call->pk;
    hsb_envelope env;
    bool ok = hsb_dec_envelope(&o->dec, rec->envelope, rec->envelope_len, &env) == HSB_OK;

    o->found = true;
    msgpack_pack_map(pk, 7);
    cmdtab_kv_u64(pk, "id", rec->id);
    cmdtab_kv_u64(pk, "msg_id", rec->msg_id);
    cmdtab_kv_str(pk, "agent", rec->agent != NULL ? rec->agent : "");
    cmdtab_kv_str(pk, "reason", rec->reason != NULL ? rec->reason : "");
    cmdtab_kv_u64(pk, "deliveries", rec->deliveries);
    cmdtab_kv_u64(pk, "ts", rec->ts);
    cmdtab_str(pk, "envelope");
    if (!ok) {
        msgpack_pack_nil(pk);
        return false;
    }
    msgpack_pack_map(pk, 12);
    cmdtab_kv_u64(pk, "id", env.id);
    cmdtab_pack_env_fields(pk, &env, true);
    cmdtab_kv_str(pk, "cid", env.cid);
    cmdtab_kv_str(pk, "batch", env.batch);
    cmdtab_kv_u64(pk, "corr", env.corr);
    cmdtab_kv_u64(pk, "prio", env.prio);
    cmdtab_kv_u64(pk, "deadline", env.deadline);
    cmdtab_kv_bool(pk, "durable", env.durable);
    cmdtab_str(pk, "body");
    if (env.body != NULL && env.body_len > 0) {
        pk->callback(pk->data, (const char *)env.body, env.body_len);
    } else {
        msgpack_pack_nil(pk);
    }
    return false;
}

static hsb_err cmdtab_dlq_show(cmdtab_call *call)
{
    cmdtab_dlq_one o;
    uint64_t id;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    if (!cmdtab_parse_u64(call->args[0], &id)) {
        snprintf(call->msg, sizeof(call->msg), "usage: dlq show ID (a number)");
        return HSB_EINVAL;
    }
    memset(&o, 0, sizeof(o));
    o.call = call;
    if (hsb_dec_init(&o.dec) != HSB_OK) {
        return HSB_ENOMEM;
    }
    err = store_dlq_get(call->s->store, id, cmdtab_dlq_show_row, &o);
    hsb_dec_fini(&o.dec);
    if (err == HSB_ENOTFOUND || (err == HSB_OK && !o.found)) {
        snprintf(call->msg, sizeof(call->msg), "no dead letter with id %" PRIu64, id);
        return HSB_ENOTFOUND;
    }
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "dlq show: %s", hsb_strerror(err));
    }
    return err;
}

/* Replay, stage 1 (worker): read the envelope. Stage 2 (loop): send it. Stage 3 (writer thread,
 * after COMMIT): the dead letter is deleted; answer. */
typedef struct cmdtab_replay {
    uint64_t dlq_id;
    uint64_t new_id;
    size_t len;
    uint8_t env[];
} cmdtab_replay;

static bool cmdtab_replay_row(void *arg, const store_dlq_rec *rec)
{
    cmdtab_call *call = arg;
    cmdtab_replay *r = malloc(sizeof(*r) + rec->envelope_len);

    if (r != NULL) {
        r->dlq_id = rec->id;
        r->len = rec->envelope_len;
        memcpy(r->env, rec->envelope, rec->envelope_len);
    }
    call->scratch = r;
    return false;
}

static void cmdtab_replay_purged(void *arg, hsb_err err, uint64_t purged)
{
    cmdtab_call *call = arg;
    cmdtab_replay *r = call->scratch;

    (void)purged;
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg),
                 "replayed as message %" PRIu64 " but the dead letter was not removed: %s",
                 r->new_id, hsb_strerror(err));
        control_call_finish(call, err);
        return;
    }
    msgpack_pack_map(call->pk, 2);
    cmdtab_kv_u64(call->pk, "replayed", r->dlq_id);
    cmdtab_kv_u64(call->pk, "new_id", r->new_id);
    control_call_finish(call, HSB_OK);
}

static hsb_err cmdtab_dlq_replay_send(cmdtab_call *call)
{
    cmdtab_replay *r = call->scratch;
    hsb_send_result res;
    hsb_envelope env;
    bool pending = false;
    hsb_dec dec;
    hsb_err err;

    if (hsb_dec_init(&dec) != HSB_OK) {
        return HSB_ENOMEM;
    }
    err = hsb_dec_envelope(&dec, r->env, r->len, &env);
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "dead letter %" PRIu64 " is unreadable: %s",
                 r->dlq_id, hsb_dec_errmsg(&dec));
        hsb_dec_fini(&dec);
        return err;
    }
    /* A fresh message from "sys": new id and deadline; not durable, so the send completes now. */
    env.id = 0;
    env.deadline = 0;
    env.deliveries = 0;
    env.ttl_ms = 0;
    env.durable = false;
    env.cid[0] = '\0';
    memset(&res, 0, sizeof(res));
    err = bus_send(call->s->bus, NULL, &env, 1, &res, NULL, &pending);
    hsb_dec_fini(&dec);
    if (err == HSB_OK) {
        err = res.err;
    }
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "replay of dead letter %" PRIu64 " refused: %s",
                 r->dlq_id, hsb_err_wire(err));
        return err;
    }
    r->new_id = res.id;
    log_info("dlq_replayed", "dlq_id=%" PRIu64 " new_id=%" PRIu64, r->dlq_id, r->new_id);
    control_call_defer(call);
    err = store_dlq_purge(call->s->store, r->dlq_id, cmdtab_replay_purged, call);
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg),
                 "replayed as message %" PRIu64 " but the dead letter was not removed: %s",
                 r->new_id, hsb_strerror(err));
        control_call_finish(call, err);
    }
    return HSB_OK;
}

static hsb_err cmdtab_dlq_replay(cmdtab_call *call)
{
    uint64_t id;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    if (!cmdtab_parse_u64(call->args[0], &id)) {
        snprintf(call->msg, sizeof(call->msg), "usage: dlq replay ID (a number)");
        return HSB_EINVAL;
    }
    err = store_dlq_get(call->s->store, id, cmdtab_replay_row, call);
    if (err == HSB_ENOTFOUND || (err == HSB_OK && call->scratch == NULL)) {
        snprintf(call->msg, sizeof(call->msg), "no dead letter with id %" PRIu64, id);
        return HSB_ENOTFOUND;
    }
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "dlq replay: %s", hsb_strerror(err));
        return err;
    }
    control_call_continue(call, cmdtab_dlq_replay_send);
    return HSB_OK;
}

static void cmdtab_purged(void *arg, hsb_err err, uint64_t purged)
{
    cmdtab_call *call = arg;

    if (err == HSB_ENOTFOUND) {
        snprintf(call->msg, sizeof(call->msg), "no dead letter with id %" PRIu64, call->u64);
    } else if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "dlq purge: %s", hsb_strerror(err));
    } else {
        msgpack_pack_map(call->pk, 1);
        cmdtab_kv_u64(call->pk, "purged", purged);
    }
    control_call_finish(call, err);
}

static hsb_err cmdtab_dlq_purge(cmdtab_call *call)
{
    uint64_t id = 0;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    if (call->n_args > 0 && (!cmdtab_parse_u64(call->args[0], &id) || id == 0)) {
        snprintf(call->msg, sizeof(call->msg), "usage: dlq purge [ID] (a number > 0)");
        return HSB_EINVAL;
    }
    call->u64 = id;
    control_call_defer(call);
    err = store_dlq_purge(call->s->store, id, cmdtab_purged, call);
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "dlq purge: %s", hsb_strerror(err));
        control_call_finish(call, err);
    }
    return HSB_OK;
}

static hsb_err cmdtab_cache_stats(cmdtab_call *call)
{
    msgpack_packer *pk = call->pk;
    store_stats st;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    store_stats_get(call->s->store, &st);
    msgpack_pack_map(pk, 2);
    cmdtab_str(pk, "cache");
    msgpack_pack_map(pk, 13);
    cmdtab_kv_u64(pk, "entries", st.cache.entries);
    cmdtab_kv_u64(pk, "bytes", st.cache.bytes);
    cmdtab_kv_u64(pk, "max_bytes", st.cache.max_bytes);
    cmdtab_kv_u64(pk, "hits", st.cache.hits);
    cmdtab_kv_u64(pk, "misses", st.cache.misses);
    cmdtab_kv_f64(pk, "hit_rate", cmdtab_round(st.cache.hit_rate * 100.0) / 100.0);
    cmdtab_kv_u64(pk, "inserts", st.cache.inserts);
    cmdtab_kv_u64(pk, "evictions", st.cache.evictions);
    cmdtab_kv_u64(pk, "expirations", st.cache.expirations);
    cmdtab_kv_u64(pk, "invalidations", st.cache.invalidations);
    cmdtab_kv_u64(pk, "flushes", st.cache.flushes);
    cmdtab_kv_u64(pk, "too_big", st.cache.too_big);
    cmdtab_kv_u64(pk, "stale_refused", st.cache.stale_refused);
    cmdtab_str(pk, "store");
    msgpack_pack_map(pk, 11);
    cmdtab_kv_u64(pk, "jobs", st.pool.jobs);
    cmdtab_kv_u64(pk, "jobs_failed", st.pool.jobs_failed);
    cmdtab_kv_u64(pk, "commits", st.pool.groups);
    cmdtab_kv_u64(pk, "commits_failed", st.pool.groups_failed);
    cmdtab_kv_u64(pk, "replays", st.pool.replays);
    cmdtab_kv_f64(pk, "avg_group", cmdtab_round(st.pool.avg_group));
    cmdtab_kv_f64(pk, "avg_commit_us", cmdtab_round(st.pool.avg_commit_us));
    cmdtab_kv_u64(pk, "queued", st.pool.queued);
    cmdtab_kv_u64(pk, "checkouts", st.pool.checkouts);
    cmdtab_kv_u64(pk, "checkout_waits", st.pool.checkout_waits);
    cmdtab_kv_u64(pk, "audit_seq", st.audit_seq);
    return HSB_OK;
}

static hsb_err cmdtab_cache_flush(cmdtab_call *call)
{
    store_stats st;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    store_stats_get(call->s->store, &st);
    store_cache_flush(call->s->store);
    log_info("cache_flushed", "entries=%zu", st.cache.entries);
    msgpack_pack_map(call->pk, 1);
    cmdtab_kv_u64(call->pk, "flushed_entries", st.cache.entries);
    return HSB_OK;
}

static hsb_err cmdtab_audit_verify(cmdtab_call *call)
{
    store_audit_report rep;
    hsb_err err;

    if ((err = cmdtab_no_store(call)) != HSB_OK) {
        return err;
    }
    memset(&rep, 0, sizeof(rep));
    err = store_audit_verify(call->s->store, &rep);
    if (err != HSB_OK) {
        snprintf(call->msg, sizeof(call->msg), "audit verify: %s", hsb_strerror(err));
        return err;
    }
    if (!rep.ok) {
        log_error("audit_chain_broken", "first_bad_seq=%" PRIu64 " rows=%" PRIu64,
                  rep.first_bad_seq, rep.rows);
        snprintf(call->msg, sizeof(call->msg),
                 "audit chain broken at seq %" PRIu64 " (%" PRIu64 " rows checked)",
                 rep.first_bad_seq, rep.rows);
        return HSB_EINTERNAL;
    }
    msgpack_pack_map(call->pk, 3);
    cmdtab_kv_bool(call->pk, "ok", true);
    cmdtab_kv_u64(call->pk, "rows", rep.rows);
    cmdtab_kv_u64(call->pk, "last_seq", rep.last_seq);
    return HSB_OK;
}

#endif /* !CMDTAB_CLIENT */
