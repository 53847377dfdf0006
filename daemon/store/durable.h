/*
 * daemon/store/durable.h - the durable message queue: messages committed before their send is
 * answered, removed when acked, read back and re-queued at start-up.
 *
 * Writes (save, remove, set_deliveries) queue a job for the writer thread and never block; their
 * completion (may be NULL) runs on the writer thread after the COMMIT that made them durable, or
 * with the error that kept them out. flags: 0, or STORE_JOB_FORCE to bypass the queue bound (for
 * bookkeeping that must not be lost, like removes). Reads block the calling thread on a reader.
 */
#ifndef HSB_STORE_DURABLE_H
#define HSB_STORE_DURABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/store/pool.h"
#include "proto/err.h"

typedef struct store store;

/* One durable message. The pointers are borrowed (copied by save; valid only during a load
 * callback). */
typedef struct store_durable_rec {
    uint64_t id;          /* the message id (primary key) */
    const char *agent;    /* destination (envelope `to`); "" when routed by type or topic */
    uint8_t lane;         /* priority 0..3 */
    int64_t deadline;     /* ms since the epoch */
    uint32_t deliveries;  /* delivery attempts so far */
    const void *envelope; /* hsb_enc_envelope output */
    size_t envelope_len;
    uint64_t enqueued_ms; /* when the broker accepted it */
} store_durable_rec;

/*
 * store_durable_save queues the insert of rec (copied; a row with the same id is replaced).
 * done(arg, HSB_OK) means committed. Errors: HSB_EINVAL (no envelope), HSB_EBUSY (queue full),
 * HSB_ECLOSED, HSB_ENOMEM.
 */
hsb_err store_durable_save(store *st, const store_durable_rec *rec, unsigned flags,
                           store_job_done_fn done, void *arg);

/* store_durable_remove queues the delete of message id (acked, expired or dead-lettered). A
 * missing id is not an error. Errors: HSB_EBUSY, HSB_ECLOSED, HSB_ENOMEM. */
hsb_err store_durable_remove(store *st, uint64_t id, unsigned flags, store_job_done_fn done,
                             void *arg);

/* store_durable_set_deliveries queues the update of id's delivery count. A missing id is not an
 * error. Errors: HSB_EBUSY, HSB_ECLOSED, HSB_ENOMEM. */
hsb_err store_durable_set_deliveries(store *st, uint64_t id, uint32_t deliveries, unsigned flags,
                                     store_job_done_fn done, void *arg);

/* Called once per row; return false to stop. rec is valid only during the call. */
typedef bool (*store_durable_fn)(void *arg, const store_durable_rec *rec);

/*
 * store_durable_load calls fn for every stored message in id order (start-up re-queueing), from
 * one snapshot, on the calling thread. Blocks. Errors: HSB_ETIMEDOUT (no reader), HSB_EIO.
 */
hsb_err store_durable_load(store *st, store_durable_fn fn, void *arg);

/*
 * store_durable_max_id returns in *out the highest message id the store knows (durable messages
 * and dead letters), 0 when none, so the daemon can seed new ids past it. Blocks.
 * Errors: HSB_ETIMEDOUT, HSB_EIO.
 */
hsb_err store_durable_max_id(store *st, uint64_t *out);

/* store_durable_count returns the number of stored messages. Blocks. Errors: as max_id. */
hsb_err store_durable_count(store *st, uint64_t *out);

#endif /* HSB_STORE_DURABLE_H */
