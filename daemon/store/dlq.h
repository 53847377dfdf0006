/*
 * daemon/store/dlq.h - dead letters: messages that failed for good, kept with the reason, the
 * agent and the delivery count, for operators to list, replay or purge (hsbusctl dlq ...).
 *
 * Writes queue a job for the writer thread and never block; their completion runs on the writer
 * thread after COMMIT. Reads block the calling thread on a reader connection.
 */
#ifndef HSB_STORE_DLQ_H
#define HSB_STORE_DLQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/store/pool.h"
#include "proto/err.h"

typedef struct store store;

/* One dead letter. Pointers are borrowed (copied by add; valid only during a callback). */
typedef struct store_dlq_rec {
    uint64_t id;          /* dead-letter id, assigned by add (ignored on input) */
    uint64_t msg_id;      /* the message's id */
    const char *agent;    /* the agent it could not be delivered to */
    const char *reason;   /* why: "max_deliveries", "expired", a nack reason, ... */
    uint32_t deliveries;  /* delivery attempts made */
    const void *envelope; /* hsb_enc_envelope output */
    size_t envelope_len;
    uint64_t ts; /* when it was dead-lettered (ms since the epoch); 0 on input = now */
} store_dlq_rec;

/* store_dlq_add queues the insert of rec (copied). Errors: HSB_EINVAL (no envelope), HSB_EBUSY,
 * HSB_ECLOSED, HSB_ENOMEM. */
hsb_err store_dlq_add(store *st, const store_dlq_rec *rec, unsigned flags, store_job_done_fn done,
                      void *arg);

/* Called once per dead letter; return false to stop. rec is valid only during the call. */
typedef bool (*store_dlq_fn)(void *arg, const store_dlq_rec *rec);

/*
 * store_dlq_list calls fn for at most limit dead letters with id > after_id, in id order (keyset
 * paging: pass the last id seen to get the next page). Blocks. Errors: HSB_ETIMEDOUT, HSB_EIO.
 */
hsb_err store_dlq_list(store *st, uint64_t after_id, size_t limit, store_dlq_fn fn, void *arg);

/* store_dlq_get calls fn once with dead letter id. Blocks. Errors: HSB_ENOTFOUND,
 * HSB_ETIMEDOUT, HSB_EIO. */
hsb_err store_dlq_get(store *st, uint64_t id, store_dlq_fn fn, void *arg);

/* store_dlq_count returns the number of dead letters. Blocks. */
hsb_err store_dlq_count(store *st, uint64_t *out);

/* Completion of a purge: how many rows went. Writer thread, after COMMIT. */
typedef void (*store_dlq_purge_fn)(void *arg, hsb_err err, uint64_t purged);

/* store_dlq_purge queues the delete of dead letter id, or of all of them when id is 0. The
 * completion gets HSB_ENOTFOUND when id was given and did not exist. Errors: HSB_EBUSY,
 * HSB_ECLOSED, HSB_ENOMEM. */
hsb_err store_dlq_purge(store *st, uint64_t id, store_dlq_purge_fn done, void *arg);

/* Completion of a take: rec is the dead letter (valid only during the call), NULL on error. */
typedef void (*store_dlq_take_fn)(void *arg, hsb_err err, const store_dlq_rec *rec);

/*
 * store_dlq_take queues a job that reads dead letter id and deletes it in one transaction (for
 * replay: the daemon re-sends the envelope from the completion). done runs after COMMIT with the
 * record, or with HSB_ENOTFOUND. done is required. Errors: HSB_EINVAL, HSB_EBUSY, HSB_ECLOSED,
 * HSB_ENOMEM.
 */
hsb_err store_dlq_take(store *st, uint64_t id, store_dlq_take_fn done, void *arg);

#endif /* HSB_STORE_DLQ_H */
