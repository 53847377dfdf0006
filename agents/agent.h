/*
 * agents/agent.h - the plugin contract between hsbusd and an agent that runs inside it.
 *
 * An agent is an ops table (hsb_agent_ops). Built-in agents are compiled in; a plugin is a shared
 * object in plugin_dir that exports `const hsb_agent_ops *hsb_agent_entry(void)`. The host checks
 * ops->abi == HSB_AGENT_ABI before calling anything else.
 *
 * Threads. Each agent instance runs `workers` host threads (config [agent.NAME] workers, default
 * 1). init runs on the instance's first worker thread before any handle_batch; fini runs after the
 * last worker has exited, on the thread that stops the agent. handle_batch runs on any of the
 * instance's workers, concurrently with itself only when workers > 1 (then the agent's state must
 * be thread-safe). An agent may block in its callbacks
 * (store queries do), but every millisecond it blocks delays its own mailbox only.
 *
 * Agents see the rest of the system only through hsb_agent_env, whose functions may be called from
 * the agent's worker threads (and from threads the agent starts itself, except where noted).
 */
#ifndef HSB_AGENTS_AGENT_H
#define HSB_AGENTS_AGENT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/envelope.h"
#include "proto/err.h"

#define HSB_AGENT_ABI 1

typedef enum hsb_log_level {
    HSB_LOG_DEBUG = 0,
    HSB_LOG_INFO,
    HSB_LOG_WARN,
    HSB_LOG_ERROR,
} hsb_log_level;

/* A value bound to or read from an SQL statement. Text and blobs are borrowed, not copied. */
typedef enum hsb_value_type {
    HSB_VALUE_NULL = 0,
    HSB_VALUE_INT,
    HSB_VALUE_REAL,
    HSB_VALUE_TEXT,
    HSB_VALUE_BLOB,
} hsb_value_type;

typedef struct hsb_value {
    hsb_value_type type;
    union {
        int64_t i;
        double d;
        struct {
            const void *p;
            size_t n;
        } s;
    } u;
} hsb_value;

/* A statement of a write or a transaction: SQL text and its bound parameters (borrowed; the store
 * copies them before the call returns). */
typedef struct hsb_stmt {
    const char *sql;
    const hsb_value *params;
    size_t n_params;
} hsb_stmt;

/* Called once per result row; cols are valid only during the call. Return false to stop early. */
typedef bool (*hsb_row_fn)(void *arg, const hsb_value *cols, size_t n_cols);

/* Called on a store thread after the write's transaction committed (HSB_OK) or failed. */
typedef void (*hsb_done_fn)(void *arg, hsb_err err);

typedef struct hsb_agent_env hsb_agent_env;

struct hsb_agent_env {
    uint32_t abi;     /* HSB_AGENT_ABI */
    const char *name; /* the agent's name (its section name) */
    void *host;       /* the host's; do not touch */

    /*
     * send routes msg as coming from this agent (from, id and deadline are set by the broker). It
     * copies msg and its body and returns HSB_OK once the message is queued for routing; routing
     * errors arrive later as a sys.error envelope with corr = the message's id. Errors:
     * HSB_EBUSY (the host's inbox is full), HSB_ESHUTDOWN, HSB_ENOMEM.
     */
    hsb_err (*send)(hsb_agent_env *env, const hsb_envelope *msg);

    /* reply sends body (one encoded msgpack value) back to the sender of req, with corr = req->id
     * and the same type, priority and batch key. Same errors as send. */
    hsb_err (*reply)(hsb_agent_env *env, const hsb_envelope *req, const void *body, size_t len);

    /* publish sends body on topic to every subscriber. Same errors as send. */
    hsb_err (*publish)(hsb_agent_env *env, const char *topic, const void *body, size_t len);

    /*
     * query runs a read-only statement through the query cache (ttl_ms 0 = the default TTL) and
     * calls row for each row. Blocks the calling thread until done. Errors: HSB_EIO with the SQLite
     * error logged, HSB_EINVAL for a statement that writes, HSB_ETIMEDOUT when no reader is free.
     */
    hsb_err (*query)(hsb_agent_env *env, const char *sql, const hsb_value *params, size_t n,
                     uint32_t ttl_ms, hsb_row_fn row, void *arg);

    /* write queues one statement for the writer thread; done (may be NULL) runs after COMMIT. */
    hsb_err (*write)(hsb_agent_env *env, const hsb_stmt *stmt, hsb_done_fn done, void *arg);

    /* txn queues statements that commit together or not at all; done runs after COMMIT. */
    hsb_err (*txn)(hsb_agent_env *env, const hsb_stmt *stmts, size_t n, hsb_done_fn done,
                   void *arg);

    /* audit appends an event to the hash-chained audit trail (asynchronously). detail is
     * key=value text and must not contain a body or a patient identifier. */
    hsb_err (*audit)(hsb_agent_env *env, const char *event, const char *detail);

    /* log writes one key=value line: ts, level, agent and event are added. fmt gives the rest. */
    void (*log)(hsb_agent_env *env, hsb_log_level level, const char *event, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));

    /* now_ms returns wall-clock ms since the epoch (a fake clock in unit tests). */
    uint64_t (*now_ms)(hsb_agent_env *env);

    /* option returns the value of key in the agent's config section, or NULL. The string lives
     * until the next reload; copy it in init if it must outlive that. */
    const char *(*option)(hsb_agent_env *env, const char *key);
};

typedef struct hsb_agent_ops {
    uint32_t abi;                  /* HSB_AGENT_ABI */
    const char *name;              /* default agent name */
    const char *const *handles;    /* NULL-terminated default types handled ("lab.*"), or NULL */
    const char *const *subscribes; /* NULL-terminated default topics, or NULL */

    /* init prepares the agent; *state is passed to the other calls. Non-HSB_OK aborts start-up. */
    hsb_err (*init)(hsb_agent_env *env, void **state);

    /*
     * handle_batch handles n messages that arrived together (same destination, same batch key, or
     * simply queued together). It sets results[i] to HSB_OK (acked) or an error (nacked: counts
     * against the breaker and the message is redelivered, up to max_deliveries). The envelopes and
     * bodies are valid only during the call.
     */
    void (*handle_batch)(void *state, hsb_agent_env *env, const hsb_envelope *msgs, size_t n,
                         hsb_err *results);

    /* fini releases the state. It runs after the last handle_batch has returned. May be NULL. */
    void (*fini)(void *state, hsb_agent_env *env);
} hsb_agent_ops;

/* The symbol a plugin exports. */
typedef const hsb_agent_ops *(*hsb_agent_entry_fn)(void);
#define HSB_AGENT_ENTRY "hsb_agent_entry"

#endif /* HSB_AGENTS_AGENT_H */
