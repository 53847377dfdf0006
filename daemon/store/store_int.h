/*
 * daemon/store/store_int.h - the store object, shared by the store's modules. Not for other
 * directories: use store.h.
 */
#ifndef HSB_STORE_STORE_INT_H
#define HSB_STORE_STORE_INT_H

#include <stdint.h>

#include "daemon/store/store.h"

#define STORE_HASH_LEN 32

struct store {
    store_config cfg;
    char *path;
    store_pool *pool;
    store_qcache *qc;

    /* Audit chain head. Writer thread only once started: "pending" follows the rows written in
     * the current group; the after_group hook copies it to "committed", or back on rollback. */
    uint64_t audit_seq;
    uint8_t audit_hash[STORE_HASH_LEN];
    uint64_t audit_pending_seq;
    uint8_t audit_pending_hash[STORE_HASH_LEN];
    uint64_t audit_committed_seq_shared; /* atomic copy for stats */
};

/* store_now_wall returns the configured wall clock in ms. */
uint64_t store_now_wall(store *st);

/* store_audit_load_head reads the chain head from the database (store_open, before the writer
 * starts). Errors: HSB_EIO. */
hsb_err store_audit_load_head(store *st);

/* store_audit_after_group commits or rolls back the pending chain head (writer thread). */
void store_audit_after_group(store *st, bool committed);

/*
 * store_read runs one read statement on a checked-out reader (uncached) and calls fn for each row
 * with the stepped sqlite3_stmt until fn returns false. Blocks the caller. Errors: HSB_ETIMEDOUT,
 * HSB_EIO, HSB_EINVAL (bad parameter count), HSB_ENOMEM.
 */
hsb_err store_read(store *st, const char *sql, const hsb_value *params, size_t n,
                   bool (*fn)(void *arg, sqlite3_stmt *row), void *arg);

#endif /* HSB_STORE_STORE_INT_H */
