/*
 * daemon/cmdtab.h - the one command table of the control protocol.
 *
 * Every operator command is one row of CMDTAB_COMMANDS below: its name, its sub-command (for
 * "breaker open", "dlq list", ...), an argument synopsis, how many arguments it takes, flags, a
 * one-line help text and its handler. The same rows drive the daemon's dispatch (daemon/control.c),
 * `hsbusctl help` and `hsbusctl help --markdown`, from which the command list of
 * docs/operations.md is generated (a test checks that the document is current). Adding a command
 * is adding a row and a handler; nothing else lists commands.
 *
 * On the wire a command is {cmd: NAME, args: [SUB, ARG...]}: the sub-command travels as the first
 * argument, so the control protocol needs no notion of sub-commands.
 *
 * The handlers are compiled into the daemon only; hsbusctl compiles this table with
 * CMDTAB_CLIENT defined, which leaves every handler pointer NULL.
 *
 * Threads: the table is constant and may be read from any thread. A handler runs on the loop
 * thread, unless its row has CMDTAB_WORKER, in which case it runs on the control socket's worker
 * thread and may block (store reads), but must not touch loop-owned state.
 */
#ifndef HSB_DAEMON_CMDTAB_H
#define HSB_DAEMON_CMDTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "proto/err.h"

#define CMDTAB_LIVE   1u /* a live view: `hsbusctl --watch` may repeat it */
#define CMDTAB_WORKER 2u /* may block: runs on the control worker thread, never on the loop */

typedef struct cmdtab_call cmdtab_call;

/*
 * A handler packs exactly one msgpack value (the reply's data) with call->pk and returns HSB_OK,
 * or returns an error with a one-line reason in call->msg (which names the thing at fault, e.g.
 * `unknown agent "nope"`). A handler that completes later (a store write) calls
 * control_call_defer(call) and returns HSB_OK; the completion then calls control_call_finish.
 */
typedef hsb_err (*cmdtab_fn)(cmdtab_call *call);

typedef struct cmdtab_entry {
    const char *name; /* wire cmd */
    const char *sub;  /* required first argument, or NULL */
    const char *args; /* synopsis of the arguments after sub, "" for none */
    uint8_t min_args; /* arguments after sub */
    uint8_t max_args;
    unsigned flags; /* CMDTAB_LIVE, CMDTAB_WORKER */
    const char *help;
    cmdtab_fn fn; /* NULL in hsbusctl */
} cmdtab_entry;

/* clang-format off */
/* X(name, sub, args, min, max, flags, help, handler) */
#define CMDTAB_COMMANDS(X)                                                                         \
    X("status", NULL, "", 0, 0, CMDTAB_LIVE,                                                       \
      "Uptime, version, agents, clients, queued and in-flight messages, rates, open breakers, "     \
      "firing alerts, store health.", cmdtab_status)                                               \
    X("agents", NULL, "", 0, 0, CMDTAB_LIVE,                                                       \
      "One row per agent: instances, queued, in flight, counters, p99 latency, breaker.",          \
      cmdtab_agents)                                                                               \
    X("queues", NULL, "", 0, 0, CMDTAB_LIVE,                                                       \
      "Queue depth per agent and priority lane, bytes, in flight, parked fetches, limits.",        \
      cmdtab_queues)                                                                               \
    X("breakers", NULL, "", 0, 0, CMDTAB_LIVE,                                                     \
      "Circuit breaker per agent: state, forced, consecutive failures, threshold, transitions.",   \
      cmdtab_breakers)                                                                             \
    X("breaker", "open", "NAME", 1, 1, 0,                                                          \
      "Force agent NAME's breaker open: its new messages are refused with E_BREAKER_OPEN.",        \
      cmdtab_breaker)                                                                              \
    X("breaker", "close", "NAME", 1, 1, 0,                                                         \
      "Force agent NAME's breaker closed (it stays closed until reset).", cmdtab_breaker)          \
    X("breaker", "reset", "NAME", 1, 1, 0,                                                         \
      "Lift a forced state and clear the counters: the breaker is closed and automatic again.",    \
      cmdtab_breaker)                                                                              \
    X("stats", NULL, "", 0, 0, CMDTAB_LIVE,                                                        \
      "Bus totals, gateway, per-agent counters and latency quantiles, log lines, process.",        \
      cmdtab_stats)                                                                                \
    X("drain", NULL, "", 0, 0, 0,                                                                  \
      "Start a graceful shutdown, as SIGTERM does: stop accepting, deliver what is queued, exit.", \
      cmdtab_drain)                                                                                \
    X("reload", NULL, "", 0, 0, 0,                                                                 \
      "Re-read the config file, as SIGHUP does; lists the keys applied and those needing a "       \
      "restart.", cmdtab_reload)                                                                   \
    X("log-level", NULL, "LEVEL", 1, 1, 0,                                                         \
      "Set the lowest level logged (debug, info, warn, error) until the next reload.",             \
      cmdtab_log_level)                                                                            \
    X("dlq", "list", "[AFTER_ID [LIMIT]]", 0, 2, CMDTAB_WORKER,                                    \
      "List dead letters with id > AFTER_ID (default 0), at most LIMIT (default 100).",            \
      cmdtab_dlq_list)                                                                             \
    X("dlq", "show", "ID", 1, 1, CMDTAB_WORKER,                                                    \
      "Show one dead letter: agent, reason, deliveries and its envelope (the body as JSON).",      \
      cmdtab_dlq_show)                                                                             \
    X("dlq", "replay", "ID", 1, 1, CMDTAB_WORKER,                                                  \
      "Send dead letter ID again (from \"sys\", not durable) and remove it from the table.",       \
      cmdtab_dlq_replay)                                                                           \
    X("dlq", "purge", "[ID]", 0, 1, CMDTAB_WORKER,                                                 \
      "Delete dead letter ID, or every dead letter without ID.", cmdtab_dlq_purge)                 \
    X("cache", "stats", "", 0, 0, CMDTAB_LIVE | CMDTAB_WORKER,                                     \
      "Query cache: entries, bytes, hits, misses, hit rate, evictions, invalidations; store pool.", \
      cmdtab_cache_stats)                                                                          \
    X("cache", "flush", "", 0, 0, CMDTAB_WORKER,                                                   \
      "Drop every cached query result.", cmdtab_cache_flush)                                       \
    X("audit", "verify", "", 0, 0, CMDTAB_WORKER,                                                  \
      "Walk the hash-chained audit trail and report the first broken link, if any.",               \
      cmdtab_audit_verify)
/* clang-format on */

extern const cmdtab_entry cmdtab[];
extern const size_t cmdtab_count;

/*
 * cmdtab_find returns the row for cmd and its arguments: a row with a sub-command matches when
 * args[0] equals it. *rest receives how many leading arguments the sub-command used (0 or 1).
 * Returns NULL when no row matches; then *known tells whether cmd itself exists (so the caller
 * can say "unknown sub-command" rather than "unknown command"). Pure; any thread.
 */
const cmdtab_entry *cmdtab_find(const char *cmd, const char *const *args, size_t n_args,
                                size_t *rest, bool *known);

/* cmdtab_usage writes "name [sub] args" of e into buf. Pure; any thread. */
void cmdtab_usage(const cmdtab_entry *e, char *buf, size_t len);

#endif /* HSB_DAEMON_CMDTAB_H */
