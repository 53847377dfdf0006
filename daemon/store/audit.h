/*
 * daemon/store/audit.h - the append-only, hash-chained audit trail.
 *
 * Each row carries seq (1, 2, 3, ... without gaps), ts (wall-clock ms), event, detail, prev_hash
 * (the hash of the row before; 32 zero bytes for seq 1) and
 *   hash = SHA-256(prev_hash || be64(seq) || be64(ts) || be32(len event) || event
 *                  || be32(len detail) || detail)
 * (libsodium crypto_hash_sha256; the lengths make the encoding unambiguous). Triggers make the
 * table refuse UPDATE and DELETE (RAISE(ABORT)), so rewriting history needs someone to drop the
 * triggers first, and store_audit_verify then finds the first row whose link no longer holds.
 *
 * The writer thread holds the chain head (last seq and hash), loaded at store_open and advanced
 * only when a group commits, so appends from any number of threads form one chain.
 */
#ifndef HSB_STORE_AUDIT_H
#define HSB_STORE_AUDIT_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/store/pool.h"
#include "proto/err.h"

typedef struct store store;

#define STORE_AUDIT_HASH_LEN 32

/*
 * store_audit_append queues a write job that appends (event, detail) with the next seq and the
 * current wall-clock time. Both strings are copied before the call returns. done (may be NULL)
 * runs on the writer thread after COMMIT. Any thread; never blocks. flags: STORE_JOB_FORCE to
 * bypass the queue bound. Errors: HSB_EINVAL (NULL event), HSB_EBUSY, HSB_ECLOSED, HSB_ENOMEM.
 */
hsb_err store_audit_append(store *st, const char *event, const char *detail, unsigned flags,
                           store_job_done_fn done, void *arg);

typedef struct store_audit_report {
    bool ok;                /* every link holds */
    uint64_t rows;          /* rows checked */
    uint64_t last_seq;      /* seq of the last row */
    uint64_t first_bad_seq; /* when !ok: the first row whose seq, prev_hash or hash is wrong */
} store_audit_report;

/*
 * store_audit_verify walks every row in seq order on a reader (one snapshot), recomputes each hash
 * and compares it (sodium_memcmp) with the stored one and with the next row's prev_hash.
 * Blocks; any thread but the loop thread. Errors: HSB_ETIMEDOUT (no reader), HSB_EIO.
 * A broken chain is not an error: it returns HSB_OK with rep->ok == false.
 */
hsb_err store_audit_verify(store *st, store_audit_report *rep);

/* store_audit_hash computes one row's hash into out (32 bytes). Pure; any thread. */
void store_audit_hash(const uint8_t prev[STORE_AUDIT_HASH_LEN], uint64_t seq, uint64_t ts,
                      const char *event, size_t event_len, const char *detail, size_t detail_len,
                      uint8_t out[STORE_AUDIT_HASH_LEN]);

#endif /* HSB_STORE_AUDIT_H */
