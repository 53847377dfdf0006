/*
 * daemon/store/persist.h - the broker's persistence interface (bus_persist_ops) on top of the
 * durable queue, the dead letters and the audit trail.
 *
 * The bus calls the ops on the loop thread and they must not block: each one only encodes what it
 * needs and queues a write job. The result of a save must reach the bus on the loop thread
 * (bus_persist_done), but the job completes on the store's writer thread; so the daemon supplies
 * post_done, which it implements by posting (token, err) into its inbox. post_done is called on the
 * writer thread, after the COMMIT that made the message durable (HSB_OK) or with the error that
 * kept it out, with no store lock held; it must not block for long (an inbox post is fine).
 *
 * remove, delivered, dead_letter and audit cannot report failure to the bus; they bypass the queue
 * bound (STORE_JOB_FORCE) and a failure is counted in store_persist_errors.
 */
#ifndef HSB_STORE_PERSIST_H
#define HSB_STORE_PERSIST_H

#include <stdbool.h>
#include <stdint.h>

#include "bus/bus.h"
#include "proto/envelope.h"
#include "proto/err.h"

typedef struct store store;
typedef struct store_persist store_persist;

typedef void (*store_persist_post_fn)(void *arg, uint64_t token, hsb_err err);

/*
 * store_persist_new creates the adapter context for st (not owned). post_done is required.
 * Pass *out as the ctx of bus_set_persist together with store_persist_ops(). Free it with
 * store_persist_free after the bus is freed and the store is closed (or synced), so that no
 * completion still refers to it. Errors: HSB_EINVAL, HSB_ENOMEM.
 */
hsb_err store_persist_new(store *st, store_persist_post_fn post_done, void *post_arg,
                          store_persist **out);

/* store_persist_free frees p. NULL does nothing. */
void store_persist_free(store_persist *p);

/* store_persist_ops returns the static ops table (save, remove, delivered, dead_letter, audit). */
const bus_persist_ops *store_persist_ops(void);

/* store_persist_errors returns how many fire-and-forget jobs (remove, delivered, dead_letter,
 * audit) failed or were refused. Any thread. */
uint64_t store_persist_errors(const store_persist *p);

/* Called once per restored message; return false to stop. env and its body are valid only
 * during the call. */
typedef bool (*store_persist_restore_fn)(void *arg, const hsb_envelope *env);

/*
 * store_persist_load decodes every durable message (id order), with its delivery count from the
 * store, and calls fn (the daemon calls bus_restore from it). Rows that do not decode are skipped
 * and counted in *bad (may be NULL). Blocks; at start-up. Errors: HSB_ETIMEDOUT, HSB_EIO,
 * HSB_ENOMEM.
 */
hsb_err store_persist_load(store *st, store_persist_restore_fn fn, void *arg, uint64_t *bad);

#endif /* HSB_STORE_PERSIST_H */
