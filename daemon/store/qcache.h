/*
 * daemon/store/qcache.h - the query cache: read results keyed by SQL text and bound parameters.
 *
 * Key. The SQL text and the parameters, serialized with their types, form the key; lookups hash
 * it and then compare it byte for byte, so two different queries never share an entry.
 *
 * Freshness. Every entry is tagged with the tables its statement reads (collected by the
 * authorizer when the statement was prepared, see stmt.h) and lives at most its TTL. The rule:
 * the cache never serves a result older than a committed write to a table that result read.
 * The writer brackets each group commit: store_qcache_write_begin (before COMMIT) drops the
 * entries of the written tables and marks those tables "being written"; store_qcache_write_end
 * (after COMMIT) clears the mark. Every table has a generation counter, bumped by both calls and by
 * explicit invalidation and flushes. A reader records the generations of the tables it will read
 * (store_qcache_snapshot) before its first sqlite3_step, and store_qcache_insert refuses the result
 * if any generation moved or a table is being written: the result may come from a snapshot older
 * than a commit that has since become visible. docs/store.md walks through the interleavings.
 *
 * Bounds. Entries are bounded in bytes (key + result + overhead); the least recently used are
 * evicted first. A result larger than an eighth of the bound is not cached.
 *
 * Threads: every function may be called from any thread; one mutex protects the cache and is held
 * only for hash and list operations. No callback is made while it is held: store_qcache_replay
 * runs on an entry the caller holds a reference to, after the lock was released. Nothing blocks
 * except on that mutex.
 */
#ifndef HSB_STORE_QCACHE_H
#define HSB_STORE_QCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agents/agent.h"
#include "proto/err.h"

typedef struct store_qcache store_qcache;
typedef struct store_qentry store_qentry;

typedef struct store_qcache_config {
    size_t max_bytes;        /* default 16 MiB (0 = default) */
    uint32_t default_ttl_ms; /* default 300000 (0 = default) */
    /* Monotonic milliseconds for TTLs; NULL = CLOCK_MONOTONIC. Tests inject a fake clock. */
    uint64_t (*clock_ms)(void *arg);
    void *clock_arg;
} store_qcache_config;

typedef struct store_qcache_stats {
    uint64_t hits;
    uint64_t misses;
    double hit_rate; /* hits / (hits + misses), 0 when none */
    uint64_t inserts;
    uint64_t stale_refused; /* inserts refused by the generation check */
    uint64_t too_big;       /* results not cached because of their size */
    uint64_t evictions;     /* entries dropped by the byte bound (LRU) */
    uint64_t expirations;   /* entries dropped because their TTL passed */
    uint64_t invalidations; /* entries dropped by writes, explicit invalidation or flushes */
    uint64_t flushes;
    size_t bytes;
    size_t entries;
    size_t max_bytes;
} store_qcache_stats;

/* A lookup key: SQL text and serialized parameters. Build with store_qkey_init; free with
 * store_qkey_fini (also after store_qcache_insert, which copies nothing from it but its bytes). */
typedef struct store_qkey {
    uint8_t *buf; /* small[] or the heap */
    size_t len;
    uint64_t hash;
    uint8_t small[192];
} store_qkey;

/* The generations of the tables a query reads, taken before it runs. */
typedef struct store_qsnap {
    struct store_qtable **tables;
    uint64_t *gens;
    size_t n;
    uint64_t global_gen;
} store_qsnap;

/* A result being collected row by row (owned by the caller until inserted or freed). */
typedef struct store_qresult {
    uint8_t *buf;
    size_t len, cap;
    size_t rows;
    size_t max_cols;
    size_t limit; /* stop collecting beyond this many bytes */
    bool failed;  /* over the limit or out of memory: do not insert */
} store_qresult;

/* store_qcache_new creates a cache (cfg copied, NULL = defaults). Errors: HSB_ENOMEM. */
hsb_err store_qcache_new(const store_qcache_config *cfg, store_qcache **out);

/* store_qcache_free frees the cache; no entry may still be held. NULL does nothing. */
void store_qcache_free(store_qcache *qc);

/* store_qkey_init builds the key of (sql, params[0..n)). Errors: HSB_ENOMEM, HSB_EINVAL (bad
 * value type). The key owns its buffer. */
hsb_err store_qkey_init(store_qkey *key, const char *sql, const hsb_value *params, size_t n);

/* store_qkey_init_scoped is store_qkey_init in a separate key space named by scope (0 is the
 * default one). The agent API caches under its own scope, so that an agent never gets a result
 * that was cached by a caller the agent policy was not applied to. */
hsb_err store_qkey_init_scoped(store_qkey *key, uint8_t scope, const char *sql,
                               const hsb_value *params, size_t n);
void store_qkey_fini(store_qkey *key);

/*
 * store_qcache_lookup finds a live entry for key. On HSB_OK *out holds a reference the caller must
 * drop with store_qcache_release (the entry stays readable even if evicted meanwhile). An expired
 * entry is dropped and reported as a miss. Errors: HSB_ENOTFOUND (a miss).
 */
hsb_err store_qcache_lookup(store_qcache *qc, const store_qkey *key, store_qentry **out);

/* store_qcache_replay calls row for each row of e until it returns false. No lock is held. Text
 * values are NUL-terminated. Errors: HSB_ENOMEM (column array). */
hsb_err store_qcache_replay(const store_qentry *e, hsb_row_fn row, void *arg);

/* store_qcache_release drops a reference from store_qcache_lookup. */
void store_qcache_release(store_qcache *qc, store_qentry *e);

/*
 * store_qcache_snapshot records the generations of tables[0..n) into *snap (which it allocates;
 * free with store_qcache_snap_fini). Call it before the query's first step. Errors: HSB_ENOMEM.
 */
hsb_err store_qcache_snapshot(store_qcache *qc, const char *const *tables, size_t n,
                              store_qsnap *snap);
void store_qcache_snap_fini(store_qsnap *snap);

/* store_qresult_init prepares an empty result that gives up beyond limit bytes. */
void store_qresult_init(store_qresult *r, size_t limit);
/* store_qresult_add appends one row (values copied). Sets r->failed rather than failing. */
void store_qresult_add(store_qresult *r, const hsb_value *cols, size_t n);
void store_qresult_fini(store_qresult *r);

/*
 * store_qcache_insert stores result under key with a TTL of ttl_ms (0 = the default) if snap's
 * generations are unchanged and none of its tables is being written. It takes result's buffer
 * (result is left empty) whether or not it inserts. Returns true when inserted.
 */
bool store_qcache_insert(store_qcache *qc, const store_qkey *key, const store_qsnap *snap,
                         store_qresult *result, uint32_t ttl_ms);

/* store_qcache_write_begin / _end bracket a COMMIT that wrote tables[0..n) (all: every table).
 * Writer thread (or a test); always in pairs with the same arguments. */
void store_qcache_write_begin(store_qcache *qc, const char *const *tables, size_t n, bool all);
void store_qcache_write_end(store_qcache *qc, const char *const *tables, size_t n, bool all);

/* store_qcache_invalidate drops every entry that read table and bumps its generation. */
void store_qcache_invalidate(store_qcache *qc, const char *table);

/* store_qcache_flush drops every entry and bumps the global generation. */
void store_qcache_flush(store_qcache *qc);

/* store_qcache_stats_get copies the counters. */
void store_qcache_stats_get(store_qcache *qc, store_qcache_stats *st);

#endif /* HSB_STORE_QCACHE_H */
