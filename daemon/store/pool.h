/*
 * daemon/store/pool.h - the connection pool: one writer thread with group commit, N readers.
 *
 * Writes. One thread, the writer, owns the only write connection. Other threads never run SQL on
 * it: they submit write jobs (store_pool_submit) to a bounded queue. The writer takes everything
 * queued (up to group_max jobs), opens one transaction (BEGIN IMMEDIATE), runs the jobs one after
 * the other, takes the jobs queued meanwhile (late joiners) into the same transaction, and COMMITs
 * once: one fsync for the whole group. Jobs run without savepoints as long as they succeed (a
 * SAVEPOINT and a RELEASE per job would double the statements the writer runs). When one fails,
 * the writer rolls the transaction back and replays the whole group with each job inside its own
 * SAVEPOINT: the failing job is rolled back to its savepoint alone and gets its own error, the
 * others commit. If SQLite rolls the whole transaction back by itself (SQLITE_FULL,
 * SQLITE_IOERR...), every job of the group fails. After the COMMIT
 * (or the failed COMMIT) the writer calls the pool's hooks (the query cache's invalidation, the
 * audit chain's bookkeeping) and then every job's completion, in submission order, on the writer
 * thread, with no lock held. A completion therefore always means "committed" (HSB_OK) or "not
 * committed" (an error): never "queued".
 *
 * Reads. N reader connections (SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX) are checked out by the
 * thread that needs one and checked back in when it is done; a connection is used by one thread
 * at a time. With WAL, readers never block the writer nor each other, and each read statement
 * sees the database as of the last COMMIT before its first step.
 *
 * Every connection caches its prepared statements (stmt.h), at most 512 per connection (the least
 * recently used are finalized between uses). Use store_conn_stmt/store_conn_put.
 */
#ifndef HSB_STORE_POOL_H
#define HSB_STORE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sqlite3.h>

#include "daemon/store/stmt.h"
#include "proto/err.h"

typedef struct store_pool store_pool;

/* A connection of the pool: the writer's (inside a job) or a checked-out reader. */
typedef struct store_conn {
    sqlite3 *db;
    store_stmt_cache *stmts;
    bool writer;
    /* private: writer, tables written by the current group */
    const char **written;
    size_t n_written, cap_written;
    bool written_all;
    /* private: reader */
    uint64_t checkout_ns;
    struct store_conn *next_free;
} store_conn;

/*
 * A write job. run executes the job's statements on the writer connection inside the group's
 * transaction; it returns HSB_OK to keep them or an error to roll them back (the error is then the
 * job's result). run must not COMMIT, ROLLBACK or BEGIN, and must not block on anything but SQLite.
 * run may be called more than once for one job (another job of its group failed, and the group is
 * replayed in a new transaction): whatever it keeps outside the database must be overwritten, not
 * accumulated, on each call, or be undone by the before_replay hook. done (may be NULL) is called
 * exactly once with the job's result, after the group's COMMIT returned, on the writer thread,
 * without locks held; it owns arg again from then on. done may submit further jobs (they go into a
 * later group) but must not wait for them.
 */
typedef hsb_err (*store_job_run_fn)(store_conn *conn, void *arg);
typedef void (*store_job_done_fn)(void *arg, hsb_err err);

/*
 * Hooks called by the writer thread around each group, without the pool's lock held.
 * before_commit: the group's statements ran, COMMIT is next; tables[0..n) are the tables they
 * wrote (all = true when a statement changed the schema, or the set is unknown).
 * after_group: COMMIT returned (committed) or the group was rolled back (!committed); same tables.
 * Both run before any completion of the group.
 * before_replay (may be NULL): a job failed, the group's transaction was rolled back and its jobs
 * are about to run again, each in a savepoint; state the jobs' runs derived from the rolled-back
 * statements must return to the last commit.
 */
typedef struct store_pool_hooks {
    void (*before_commit)(void *arg, const char *const *tables, size_t n, bool all);
    void (*after_group)(void *arg, bool committed, const char *const *tables, size_t n, bool all);
    void (*before_replay)(void *arg);
    void *arg;
} store_pool_hooks;

typedef struct store_pool_config {
    const char *path;         /* database file; created when missing */
    bool sync_full;           /* PRAGMA synchronous = FULL (true) or NORMAL (false) */
    unsigned readers;         /* reader connections; default 2 (0 = default) */
    uint32_t busy_timeout_ms; /* PRAGMA busy_timeout on every connection; default 5000 */
    size_t queue_max;         /* write jobs queued at most; default 65536 */
    size_t group_max;         /* jobs per transaction at most; default 4096 */
} store_pool_config;

typedef struct store_pool_stats {
    uint64_t jobs;          /* completed jobs */
    uint64_t jobs_failed;   /* completed with an error */
    uint64_t groups;        /* transactions */
    uint64_t groups_failed; /* transactions whose BEGIN or COMMIT failed */
    uint64_t replays;       /* groups rolled back and run again with savepoints (a job failed) */
    uint64_t max_group;     /* largest group */
    double avg_group;       /* jobs / groups */
    uint64_t commit_ns;     /* total time in COMMIT (the fsync) */
    double avg_commit_us;
    uint64_t run_ns;       /* total time running jobs (BEGIN to before COMMIT) */
    uint64_t done_ns;      /* total time in completions */
    uint64_t queued;       /* jobs waiting now */
    uint64_t refused_busy; /* submits refused because the queue was full */
    unsigned readers;
    unsigned readers_busy;      /* checked out now */
    uint64_t checkouts;         /* successful checkouts */
    uint64_t checkout_waits;    /* checkouts that had to wait for a free reader */
    uint64_t checkout_timeouts; /* checkouts that gave up */
    uint64_t wait_ns;           /* total time spent waiting for readers */
    double reader_utilization;  /* busy reader time / (readers * time since open), 0..1 */
} store_pool_stats;

/*
 * store_pool_open opens the database (WAL, busy_timeout, foreign keys, synchronous), applies the
 * migrations, opens the readers, and returns the pool in *out, owned by the caller. The writer
 * thread is not started yet: set the hooks, then call store_pool_start. Blocks on disk I/O.
 * Errors: HSB_EINVAL (no path, or a newer schema), HSB_EIO (SQLite failed), HSB_ENOMEM.
 */
hsb_err store_pool_open(const store_pool_config *cfg, store_pool **out);

/* store_pool_set_hooks installs hooks (copied). Only before store_pool_start. */
void store_pool_set_hooks(store_pool *p, const store_pool_hooks *hooks);

/* store_pool_start starts the writer thread. Errors: HSB_ENOMEM (thread creation failed). */
hsb_err store_pool_start(store_pool *p);

/*
 * store_pool_close stops accepting jobs (submits fail with HSB_ECLOSED), lets the writer finish
 * every queued job (their completions run), joins it, finalizes every cached statement and closes
 * every connection. Every reader must have been checked in. Returns HSB_OK when every
 * sqlite3_close returned SQLITE_OK, HSB_EIO otherwise (a leaked statement). Frees p.
 * Any thread but the writer; blocks until the queue is drained. store_pool_close(NULL) is HSB_OK.
 */
hsb_err store_pool_close(store_pool *p);

#define STORE_JOB_FORCE 1u /* accept the job even when the queue is full (only closing refuses) */

/*
 * store_pool_submit queues a write job. On HSB_OK the pool owns the job until done runs (arg stays
 * the caller's memory, untouched by the pool). On error nothing was queued and done will not be
 * called. Any thread (completions included); never blocks. Errors: HSB_EBUSY (queue full and
 * flags lacks STORE_JOB_FORCE), HSB_ECLOSED (closing), HSB_ENOMEM.
 */
hsb_err store_pool_submit(store_pool *p, store_job_run_fn run, store_job_done_fn done, void *arg,
                          unsigned flags);

/*
 * store_pool_sync waits until every job submitted before the call has completed (its completion
 * has returned). Blocks. Must not be called from the writer thread (completions). Errors:
 * HSB_ECLOSED, HSB_ENOMEM.
 */
hsb_err store_pool_sync(store_pool *p);

/*
 * store_pool_checkout lends a reader connection to the calling thread until store_pool_checkin.
 * Waits at most timeout_ms for one to become free. Errors: HSB_ETIMEDOUT, HSB_ECLOSED.
 */
hsb_err store_pool_checkout(store_pool *p, uint32_t timeout_ms, store_conn **out);

/* store_pool_checkin returns c (from store_pool_checkout). Statements must have been put back. */
void store_pool_checkin(store_pool *p, store_conn *c);

/* store_pool_stats_get copies the counters. Any thread; takes the pool's lock briefly. */
void store_pool_stats_get(store_pool *p, store_pool_stats *st);

/*
 * store_conn_stmt returns c's cached statement for sql (see store_stmt_get). On the writer
 * connection it also records the tables the statement writes, for the hooks. Same thread as the
 * connection's user. Errors: as store_stmt_get.
 */
hsb_err store_conn_stmt(store_conn *c, const char *sql, store_stmt **out);

/* store_conn_put returns s to c's cache (reset, bindings cleared). */
void store_conn_put(store_conn *c, store_stmt *s);

/*
 * store_conn_exec prepares (cached), binds params and steps sql to completion, ignoring rows.
 * *changes (may be NULL) receives sqlite3_changes. Errors: as store_stmt_get and store_stmt_bind,
 * HSB_EIO when a step fails (a constraint, a RAISE(ABORT) trigger).
 */
hsb_err store_conn_exec(store_conn *c, const char *sql, const hsb_value *params, size_t n,
                        int *changes);

/* store_now_ns returns CLOCK_MONOTONIC in ns; store_wall_ms CLOCK_REALTIME in ms. */
uint64_t store_now_ns(void);
uint64_t store_wall_ms(void);

#endif /* HSB_STORE_POOL_H */
