/*
 * daemon/alerts.h - the operator tick and the alert rules.
 *
 * One uv_timer on the loop fires every alerts.interval_ms (live: a reload re-arms it). Each tick
 *   1. samples the daemon: rates per second over the last interval, the loop's lag (how late the
 *      timer fired), RSS and CPU time (daemon/procstat.h) and, when the store is attached, whether
 *      it is writable (no commit failed and no write job was refused for a full queue since the
 *      previous tick);
 *   2. evaluates the rules, per agent where it makes sense:
 *        p99_latency_ms   p99 of enqueue->ack latency over the interval  > alerts.p99_ms
 *        error_rate_pct   (nacked+expired+rejected) / (delivered+rejected) > alerts.error_pct
 *        queue_depth      messages queued for the agent                  > alerts.queue_depth
 *        memory_rss_bytes the daemon's RSS (agent "")                    > alerts.rss_bytes
 *      A threshold of 0 turns a rule off. A rule fires once its condition has held for
 *      alerts.for_ms without interruption, and resolves as soon as it no longer holds. Firing
 *      and resolving are logged (event=alert_firing / alert_resolved, rule=, agent=, value=,
 *      threshold=) and published on topic "sys.alerts" from "sys" with the body
 *      {rule, agent, state ("firing" | "resolved"), value, threshold, ts};
 *   3. calls the tick hook (the metrics server refreshes its snapshot there).
 *
 * Threads: everything here runs on the loop thread. Nothing blocks.
 */
#ifndef HSB_DAEMON_ALERTS_H
#define HSB_DAEMON_ALERTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/procstat.h"
#include "proto/envelope.h"
#include "proto/err.h"

struct srv;

typedef enum alerts_rule {
    ALERTS_P99 = 0,
    ALERTS_ERROR_RATE,
    ALERTS_QUEUE_DEPTH,
    ALERTS_MEMORY,
    ALERTS_RULE_COUNT
} alerts_rule;

/* One firing (rule, agent) pair. */
typedef struct alerts_state {
    alerts_rule rule;
    char agent[HSB_NAME_MAX + 1]; /* "" for process-wide rules */
    double value;
    double threshold;
    uint64_t since_ms; /* when it fired, ms since the epoch */
} alerts_state;

/* What the last tick measured. */
typedef struct alerts_sample {
    uint64_t taken_ms; /* 0 before the first tick */
    double routed_per_s;
    double delivered_per_s;
    double acked_per_s;
    double failed_per_s;
    uint64_t loop_lag_ms;     /* how late the last tick fired */
    uint64_t loop_lag_max_ms; /* the worst since start */
    procstat proc;
    bool store_present;
    bool store_ok; /* no failed commit and no write refused for a full queue since the last tick */
} alerts_sample;

typedef struct alerts alerts;
typedef void (*alerts_tick_fn)(void *arg);

/* alerts_rule_name returns "p99_latency_ms", "error_rate_pct", "queue_depth" or
 * "memory_rss_bytes". Static; any thread. */
const char *alerts_rule_name(alerts_rule r);

/* alerts_start creates the evaluator and starts its timer on s's loop; the first tick comes one
 * interval later. On HSB_OK *out is owned by the caller until alerts_free. Loop thread; never
 * blocks. Errors: HSB_ENOMEM, HSB_EIO (libuv refused the timer). */
hsb_err alerts_start(struct srv *s, alerts **out);

/* alerts_set_tick_hook makes fn(arg) run on the loop at the end of every tick, and once right
 * away. al keeps fn and arg (not owned) until alerts_stop. Loop thread. */
void alerts_set_tick_hook(alerts *al, alerts_tick_fn fn, void *arg);

/* alerts_sample_get copies the last tick's sample into *out. Loop thread; never blocks. */
void alerts_sample_get(const alerts *al, alerts_sample *out);

/* alerts_firing copies up to max firing alerts into out (the caller's array) and returns how many
 * are firing, which may exceed max. Loop thread; never blocks. */
size_t alerts_firing(const alerts *al, alerts_state *out, size_t max);

/* alerts_stop closes the timer (uv_close); no tick runs afterwards. alerts_free frees al once the
 * loop has run the close callback (srv_fini's time). Both on the loop thread; alerts_stop(NULL)
 * and alerts_free(NULL) do nothing. */
void alerts_stop(alerts *al);
void alerts_free(alerts *al);

#endif /* HSB_DAEMON_ALERTS_H */
