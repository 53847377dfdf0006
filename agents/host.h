/*
 * agents/host.h - runs an agent (built-in or plugin) on its own worker threads.
 *
 * The loop thread pushes batches of deliveries into the agent's mailbox (agent_host_push); a
 * worker pops a batch, calls the agent's handle_batch, and posts the batch back to the loop with
 * the per-message results and everything the agent sent while handling it (its outbox). One
 * hand-off each way per batch, not per message: that is what keeps a built-in agent fast.
 *
 * The mailbox is bounded by the credit the bus gives a push client (mailbox messages): the bus
 * never delivers more than that, so agent_host_push never has to refuse.
 *
 * The host does not know the daemon. It reaches it through agent_host_services (post a batch back
 * to the loop, store access, logging, clock), which the daemon fills in.
 *
 * Lifecycle: agent_host_start -> pushes -> agent_host_stop (no more pushes; workers finish what
 * the mailbox holds, then the agent's fini runs) -> agent_host_free. Batches still travelling to
 * the loop belong to the loop (agent_batch_free).
 */
#ifndef HSB_AGENTS_HOST_H
#define HSB_AGENTS_HOST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agents/agent.h"
#include "bus/bus.h"

typedef struct agent_host agent_host;

/*
 * A batch travelling between the loop and a worker. Filled by agent_host_push (deliveries),
 * completed by the worker (results, outbox), handed back through services.post, freed by the
 * loop with agent_batch_free.
 */
typedef struct agent_batch {
    void *link[2]; /* owned by the poster while the batch travels (the daemon's inbox) */
    agent_host *host;
    bus_delivery *d; /* n deliveries; the batch holds one reference on each message */
    size_t n;
    hsb_err *results; /* n results, set by the worker */
    bus_msg **outbox; /* messages the agent sent while handling this batch (owned) */
    size_t n_out, cap_out;
    uint64_t handle_ms; /* time spent in handle_batch */
} agent_batch;

typedef struct agent_host_services {
    void *arg;
    /* post hands b to the loop thread. bounded: refuse with HSB_EBUSY when the daemon's inbox is
     * over its limit (used for sends made outside handle_batch). Takes b only on HSB_OK. Any
     * thread. */
    hsb_err (*post)(void *arg, agent_batch *b, bool bounded);
    /* Store access for hsb_agent_env; NULL entries make the env calls answer HSB_EINVAL. */
    hsb_err (*query)(void *arg, const char *sql, const hsb_value *params, size_t n, uint32_t ttl_ms,
                     hsb_row_fn row, void *row_arg);
    hsb_err (*write)(void *arg, const hsb_stmt *stmt, hsb_done_fn done, void *done_arg);
    hsb_err (*txn)(void *arg, const hsb_stmt *stmts, size_t n, hsb_done_fn done, void *done_arg);
    hsb_err (*audit)(void *arg, const char *agent, const char *event, const char *detail);
    void (*vlog)(void *arg, hsb_log_level level, const char *agent, const char *event,
                 const char *fmt, va_list ap);
    uint64_t (*now_ms)(void *arg);
    /* option returns the agent's config option key, or NULL. */
    const char *(*option)(void *arg, const char *agent, const char *key);
} agent_host_services;

/*
 * agent_host_start starts `workers` threads for agent `name` implemented by ops, calls ops->init
 * on the first one and waits for it. svc is copied. owner is an opaque pointer for the daemon
 * (its bus_client). Blocks until init has returned. Errors: HSB_EINVAL (ABI mismatch), the
 * agent's init error, HSB_ENOMEM, HSB_EIO (thread creation).
 */
hsb_err agent_host_start(const hsb_agent_ops *ops, const char *name, uint32_t workers,
                         const agent_host_services *svc, agent_host **out);

/* agent_host_set_owner / agent_host_owner: the daemon's pointer for this host. Loop thread. */
void agent_host_set_owner(agent_host *h, void *owner);
void *agent_host_owner(const agent_host *h);
const char *agent_host_name(const agent_host *h);

/* agent_host_env returns the environment the host gives its agent (for tests that act as the
 * agent's own threads). Owned by h. */
hsb_agent_env *agent_host_env(agent_host *h);

/*
 * agent_host_push queues n deliveries as one batch for a worker. It takes the references in d[]
 * (d itself is copied). Loop thread; never blocks. Errors: HSB_ENOMEM, HSB_ESHUTDOWN (stopped):
 * then the caller still owns the references.
 */
hsb_err agent_host_push(agent_host *h, const bus_delivery *d, size_t n);

/*
 * agent_host_stop refuses further pushes, lets the workers empty the mailbox, runs fini and joins
 * the threads. Loop thread; blocks until the workers have finished, so the daemon calls it after
 * the bus has stopped delivering. Batches the workers post meanwhile reach the daemon's inbox as
 * usual; the daemon drains it after stopping every host.
 */
void agent_host_stop(agent_host *h);

/* agent_host_free frees a stopped host. NULL-safe. */
void agent_host_free(agent_host *h);

/* agent_batch_free drops the batch's message references, its outbox and the batch. Loop thread
 * (any thread, in fact). NULL-safe. */
void agent_batch_free(agent_batch *b);

/* agent_builtin_find returns the ops of a compiled-in agent ("echo"), or NULL; *known (may be
 * NULL) receives the function that says whether an option key is the agent's. */
const hsb_agent_ops *agent_builtin_find(const char *name, bool (**known)(const char *key));

/*
 * agent_plugin_load dlopens path and returns its ops (checked: ABI, name, entry points) and the
 * handle for agent_plugin_unload. Blocks on file I/O. Errors: HSB_ENOTFOUND (no file or no
 * symbol), HSB_EINVAL (ABI mismatch or incomplete ops); err receives dlerror's text.
 */
hsb_err agent_plugin_load(const char *path, const hsb_agent_ops **ops, void **handle, char *err,
                          size_t errlen);
void agent_plugin_unload(void *handle);

#endif /* HSB_AGENTS_HOST_H */
