/*
 * daemon/store/stmt.h - the per-connection prepared-statement cache.
 *
 * Every SQLite connection of the store (the writer's and each reader's) owns one store_stmt_cache:
 * a small hash map from SQL text to a prepared sqlite3_stmt. A statement is prepared the first
 * time its text is seen on that connection and reused afterwards; store_stmt_put resets it and
 * clears its bindings so the next user starts clean.
 *
 * While a statement is prepared, an authorizer (sqlite3_set_authorizer) records the tables it
 * reads (SQLITE_READ) and writes (SQLITE_INSERT, SQLITE_UPDATE, SQLITE_DELETE and schema changes).
 * The sets are cached with the statement, so the query cache knows which tables a result depends
 * on, and the writer knows which tables a transaction wrote, without parsing SQL.
 *
 * Threads: a cache belongs to its connection, and a connection is used by one thread at a time
 * (the writer thread, or the thread that checked a reader out of the pool). No function here
 * takes a lock; none blocks except inside SQLite itself (prepare may wait for the schema lock up
 * to the connection's busy_timeout).
 */
#ifndef HSB_STORE_STMT_H
#define HSB_STORE_STMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "agents/agent.h"
#include "proto/err.h"

/* A cached statement. The table names are owned by the entry and live as long as the cache. */
typedef struct store_stmt {
    sqlite3_stmt *stmt; /* prepared; use it between store_stmt_get and store_stmt_put */
    char **reads;       /* tables the statement reads (SQLITE_READ), no duplicates */
    size_t n_reads;
    char **writes; /* tables it inserts into, updates, deletes from, creates, alters or drops */
    size_t n_writes;
    bool ddl;    /* it changes the schema (CREATE, DROP, ALTER) */
    bool unsafe; /* it runs a PRAGMA, ATTACH or DETACH */
    bool txn;    /* it is transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) */
    bool in_use; /* between get and put */
    /* private */
    char *sql;
    size_t sql_len;
    uint64_t hash;
    uint64_t last_use;
    struct store_stmt *next;
} store_stmt;

typedef struct store_stmt_cache store_stmt_cache;

typedef struct store_stmt_stats {
    uint64_t prepares; /* statements prepared (cache misses) */
    uint64_t hits;     /* gets served from the cache */
    uint64_t trimmed;  /* statements finalized by store_stmt_cache_trim */
    size_t entries;
} store_stmt_stats;

/*
 * store_stmt_cache_new creates the cache of connection db and installs its authorizer on db (so
 * db must not have another authorizer). The cache does not own db. Errors: HSB_ENOMEM.
 */
hsb_err store_stmt_cache_new(sqlite3 *db, store_stmt_cache **out);

/*
 * store_stmt_cache_free finalizes every cached statement and frees the cache, so that
 * sqlite3_close on the connection can return SQLITE_OK. No statement may be in use.
 * store_stmt_cache_free(NULL) does nothing.
 */
void store_stmt_cache_free(store_stmt_cache *c);

/*
 * store_stmt_get returns the prepared statement for sql (NUL-terminated, exactly one statement;
 * trailing whitespace and a semicolon are allowed), preparing it on first use. The entry stays
 * owned by the cache; the caller uses it until store_stmt_put. Errors: HSB_EINVAL (sql holds more
 * than one statement, or nothing, or the statement is already in use on this connection), HSB_EIO
 * (SQLite refused to prepare it: syntax, unknown table; see sqlite3_errmsg of the connection),
 * HSB_ENOMEM.
 */
hsb_err store_stmt_get(store_stmt_cache *c, const char *sql, store_stmt **out);

/* store_stmt_put resets s, clears its bindings and returns it to the cache. Never fails. */
void store_stmt_put(store_stmt_cache *c, store_stmt *s);

/*
 * store_stmt_cache_trim bounds the cache: when it holds more than max statements, it finalizes the
 * least recently used ones not in use until max / 2 remain. Call it only when no table-set pointer
 * from this cache is still held (the pool calls it after each group and at reader checkin).
 */
void store_stmt_cache_trim(store_stmt_cache *c, size_t max);

/* store_stmt_stats_get copies the counters. Same thread as the connection's user. */
void store_stmt_stats_get(const store_stmt_cache *c, store_stmt_stats *st);

/*
 * store_stmt_bind binds n values to s's parameters 1..n. Text and blobs are bound with
 * SQLITE_STATIC: they must stay valid until the statement is reset (store_stmt_put). Errors:
 * HSB_EINVAL (n differs from the statement's parameter count), HSB_EIO, HSB_ENOMEM.
 */
hsb_err store_stmt_bind(store_stmt *s, const hsb_value *params, size_t n);

/*
 * store_stmt_columns fills cols[0..n) from the current row of stmt (n must not exceed its column
 * count). Text and blob pointers point into SQLite's memory and are valid until the next step or
 * reset; text is NUL-terminated (the NUL is not counted in u.s.n).
 */
void store_stmt_columns(sqlite3_stmt *stmt, hsb_value *cols, size_t n);

/* store_err_from_sqlite maps an SQLite result code: SQLITE_NOMEM -> HSB_ENOMEM, SQLITE_BUSY and
 * SQLITE_LOCKED -> HSB_EBUSY, any other failure -> HSB_EIO, SQLITE_OK/ROW/DONE -> HSB_OK. */
hsb_err store_err_from_sqlite(int rc);

/* store_hash64 is FNV-1a over len bytes, continuing from h (start with STORE_HASH64_INIT). */
#define STORE_HASH64_INIT 14695981039346656037ull
uint64_t store_hash64(uint64_t h, const void *p, size_t len);

#endif /* HSB_STORE_STMT_H */
