/*
 * daemon/store/store.h - the daemon's SQLite store: one database file behind a connection pool
 * with group commit, a statement cache per connection, a query cache, the durable message queue,
 * dead letters, the hash-chained audit trail, the broker's persistence adapter and the store
 * functions of the agent environment. docs/store.md explains the design; each module's header
 * below documents its functions.
 *
 * Lifecycle: store_open -> (use) -> store_close. A store is shared by every thread of the daemon:
 * the functions of this header and of the module headers may be called from any thread unless
 * their comment says otherwise. Functions that "queue a write job" never block and report through
 * a completion that runs on the store's writer thread after COMMIT; functions that read block the
 * calling thread (never call them on the loop thread).
 */
#ifndef HSB_STORE_STORE_H
#define HSB_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/store/pool.h"
#include "daemon/store/qcache.h"
#include "proto/err.h"

typedef struct store store;

typedef enum store_sync_mode {
    STORE_SYNC_FULL = 0, /* a completed write survives power loss (default) */
    STORE_SYNC_NORMAL,   /* a completed write survives a process crash; power loss may lose the
                            last commits, never corrupt the database (docs/store.md) */
} store_sync_mode;

typedef struct store_config {
    const char *path;             /* database file; default "var/hsbus.db" (directory must exist) */
    store_sync_mode sync;         /* default STORE_SYNC_FULL */
    unsigned readers;             /* reader connections; default 2 */
    uint32_t busy_timeout_ms;     /* SQLite busy_timeout; default 5000 */
    uint32_t checkout_timeout_ms; /* wait for a free reader; default 1000 */
    size_t queue_max;             /* write jobs queued at most; default 65536 */
    size_t group_max;             /* jobs per transaction at most; default 4096 */
    size_t cache_max_bytes;       /* query cache bound; default 16 MiB */
    uint32_t cache_ttl_ms;        /* default query TTL; default 300000 */
    /* Monotonic ms for cache TTLs (NULL: CLOCK_MONOTONIC) and wall-clock ms since the epoch for
     * timestamps (NULL: CLOCK_REALTIME). Tests inject fakes. */
    uint64_t (*clock_ms)(void *arg);
    void *clock_arg;
    uint64_t (*wall_ms)(void *arg);
    void *wall_arg;
} store_config;

typedef struct store_stats {
    store_pool_stats pool;
    store_qcache_stats cache;
    uint64_t audit_seq; /* last committed audit sequence number */
} store_stats;

/* store_config_defaults fills cfg with the defaults above. */
void store_config_defaults(store_config *cfg);

/*
 * store_open opens (creating and migrating if needed) the database of cfg (copied; the path is
 * copied too), loads the audit chain's head, and starts the writer thread. On HSB_OK *out is owned
 * by the caller until store_close. Blocks on disk I/O; call it at start-up.
 * Errors: HSB_EINVAL (bad config, database newer than this binary), HSB_EIO, HSB_ENOMEM.
 */
hsb_err store_open(const store_config *cfg, store **out);

/*
 * store_close stops accepting jobs (later submits fail with HSB_ECLOSED), finishes every queued
 * job (completions run), joins the writer, finalizes every cached statement and closes every
 * connection, then frees st. No reader may be checked out and no query may be running. Returns
 * HSB_EIO if a connection did not close cleanly (SQLITE_BUSY: a leaked statement). Blocks.
 * Not on the writer thread. store_close(NULL) returns HSB_OK.
 */
hsb_err store_close(store *st);

/* store_sync waits until every job queued before the call has completed. Blocks; not on the
 * writer thread. Errors: HSB_ECLOSED. */
hsb_err store_sync(store *st);

/* store_stats_get fills *out. Takes the pool's and cache's locks briefly. */
void store_stats_get(store *st, store_stats *out);

/* The store's pool and query cache, for the modules and for tests. Owned by st. */
store_pool *store_pool_of(store *st);
store_qcache *store_qcache_of(store *st);

/* store_cache_flush drops every cached result; store_cache_invalidate those that read table.
 * (hsbusctl cache flush.) */
void store_cache_flush(store *st);
void store_cache_invalidate(store *st, const char *table);

#include "daemon/store/agentapi.h"
#include "daemon/store/audit.h"
#include "daemon/store/dlq.h"
#include "daemon/store/durable.h"
#include "daemon/store/persist.h"

#endif /* HSB_STORE_STORE_H */
