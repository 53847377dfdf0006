/*
 * tests/unit/test_store_pool.c - the store's pool against a real SQLite file in a temp dir:
 * group commit (completions only after COMMIT, groups of more than one job, a failing job rolled
 * back alone, the replay of a group with savepoints after a failure), reader checkout and timeout,
 * the statement cache, migrations on reopen, close.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/store/schema.h"
#include "daemon/store/store.h"

#include "store_tmpdb.h"

typedef struct fixture {
    store_tmpdb db;
    store *st;
} fixture;

static store *fixture_open(fixture *f, store_sync_mode sync)
{
    store_config cfg;
    store_config_defaults(&cfg);
    cfg.path = f->db.path;
    cfg.sync = sync;
    store *st = NULL;
    assert_int_equal(store_open(&cfg, &st), HSB_OK);
    return st;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (store_tmpdb_make(&f->db, "store") != 0) {
        return -1;
    }
    f->st = fixture_open(f, STORE_SYNC_FULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->st != NULL) {
        assert_int_equal(store_close(f->st), HSB_OK);
    }
    store_tmpdb_remove(&f->db);
    free(f);
    return 0;
}

static void create_table(store *st, const char *sql)
{
    hsb_stmt s = {.sql = sql};
    assert_int_equal(store_write(st, &s, 1, 0, NULL, NULL), HSB_OK);
    assert_int_equal(store_sync(st), HSB_OK);
}

/* ---- group commit ----------------------------------------------------------------------- */

#define GC_THREADS 8
#define GC_JOBS    200

typedef struct gc_ctx {
    store *st;
    sqlite3 *check; /* raw connection, used only by completions (writer thread) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int not_visible; /* completions that ran before their row was committed */
    int errors;
} gc_ctx;

typedef struct gc_job {
    gc_ctx *ctx;
    int64_t id;
} gc_job;

static hsb_err gc_run(store_conn *c, void *arg)
{
    gc_job *j = arg;
    hsb_value v[2] = {{.type = HSB_VALUE_INT, .u.i = j->id},
                      {.type = HSB_VALUE_BLOB, .u.s = {"payload", 7}}};
    return store_conn_exec(c, "INSERT INTO t(id, v) VALUES (?, ?)", v, 2, NULL);
}

static void gc_done(void *arg, hsb_err err)
{
    gc_job *j = arg;
    gc_ctx *ctx = j->ctx;
    sqlite3_stmt *q;
    int found = 0;

    /* Another connection sees only committed data. */
    sqlite3_prepare_v2(ctx->check, "SELECT count(*) FROM t WHERE id = ?", -1, &q, NULL);
    sqlite3_bind_int64(q, 1, j->id);
    if (sqlite3_step(q) == SQLITE_ROW) {
        found = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    pthread_mutex_lock(&ctx->mu);
    if (err != HSB_OK) {
        ctx->errors++;
    }
    if (found != 1) {
        ctx->not_visible++;
    }
    ctx->done++;
    pthread_cond_broadcast(&ctx->cv);
    pthread_mutex_unlock(&ctx->mu);
    free(j);
}

typedef struct gc_thread {
    gc_ctx *ctx;
    int index;
} gc_thread;

static void *gc_submitter(void *arg)
{
    gc_thread *t = arg;
    for (int i = 0; i < GC_JOBS; i++) {
        gc_job *j = malloc(sizeof(*j));
        j->ctx = t->ctx;
        j->id = (int64_t)t->index * 100000 + i;
        hsb_err err;
        while ((err = store_pool_submit(store_pool_of(t->ctx->st), gc_run, gc_done, j, 0)) ==
               HSB_EBUSY) {
            usleep(100);
        }
        assert_int_equal(err, HSB_OK);
    }
    return NULL;
}

static void test_group_commit(void **state)
{
    fixture *f = *state;
    gc_ctx ctx = {.st = f->st};
    pthread_t th[GC_THREADS];
    gc_thread args[GC_THREADS];
    store_pool_stats ps;

    create_table(f->st, "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)");
    assert_int_equal(sqlite3_open_v2(f->db.path, &ctx.check, SQLITE_OPEN_READONLY, NULL),
                     SQLITE_OK);
    pthread_mutex_init(&ctx.mu, NULL);
    pthread_cond_init(&ctx.cv, NULL);
    for (int i = 0; i < GC_THREADS; i++) {
        args[i] = (gc_thread){&ctx, i};
        pthread_create(&th[i], NULL, gc_submitter, &args[i]);
    }
    for (int i = 0; i < GC_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    pthread_mutex_lock(&ctx.mu);
    while (ctx.done < GC_THREADS * GC_JOBS) {
        pthread_cond_wait(&ctx.cv, &ctx.mu);
    }
    pthread_mutex_unlock(&ctx.mu);
    assert_int_equal(ctx.errors, 0);
    assert_int_equal(ctx.not_visible, 0);

    store_pool_stats_get(store_pool_of(f->st), &ps);
    assert_true(ps.jobs >= GC_THREADS * GC_JOBS);
    assert_true(ps.max_group > 1);
    assert_true(ps.groups < ps.jobs);
    assert_true(ps.avg_group > 1.0);
    sqlite3_close(ctx.check);
    pthread_cond_destroy(&ctx.cv);
    pthread_mutex_destroy(&ctx.mu);
}

/* A job that holds the writer until released, so that the next jobs queue up into one group. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool entered, open;
} gate;

static hsb_err gate_run(store_conn *c, void *arg)
{
    gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->entered = true;
    pthread_cond_broadcast(&g->cv);
    while (!g->open) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return HSB_OK;
}

static void gate_hold(store *st, gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->entered = g->open = false;
    assert_int_equal(store_pool_submit(store_pool_of(st), gate_run, NULL, g, 0), HSB_OK);
    pthread_mutex_lock(&g->mu);
    while (!g->entered) {
        pthread_cond_wait(&g->cv, &g->mu);
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_release(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void record_err(void *arg, hsb_err err)
{
    *(hsb_err *)arg = err;
}

static bool count_row(void *arg, const hsb_value *cols, size_t n)
{
    assert_int_equal(n, 1);
    *(int64_t *)arg = cols[0].u.i;
    return true;
}

static void test_failing_job_rolled_back_alone(void **state)
{
    fixture *f = *state;
    gate g;
    hsb_err e1 = HSB_EINTERNAL, e2 = HSB_EINTERNAL, e3 = HSB_EINTERNAL;
    store_pool_stats before, after;
    int64_t n = -1;

    create_table(f->st, "CREATE TABLE u(id INTEGER PRIMARY KEY)");
    store_pool_stats_get(store_pool_of(f->st), &before);
    gate_hold(f->st, &g);
    hsb_value one = {.type = HSB_VALUE_INT, .u.i = 1};
    hsb_value three = {.type = HSB_VALUE_INT, .u.i = 3};
    hsb_stmt a = {"INSERT INTO u(id) VALUES (?)", &one, 1};
    hsb_stmt b[2] = {{"INSERT INTO u(id) VALUES (2)", NULL, 0},
                     {"INSERT INTO u(id) VALUES (?)", &one, 1}}; /* duplicate: fails */
    hsb_stmt c = {"INSERT INTO u(id) VALUES (?)", &three, 1};
    assert_int_equal(store_write(f->st, &a, 1, 0, record_err, &e1), HSB_OK);
    assert_int_equal(store_write(f->st, b, 2, 0, record_err, &e2), HSB_OK);
    assert_int_equal(store_write(f->st, &c, 1, 0, record_err, &e3), HSB_OK);
    gate_release(&g);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(e1, HSB_OK);
    assert_int_equal(e2, HSB_EIO);
    assert_int_equal(e3, HSB_OK);
    store_pool_stats_get(store_pool_of(f->st), &after);
    assert_int_equal(after.groups_failed, before.groups_failed);
    assert_true(after.max_group >= 4); /* gate + 3 writes in one transaction */

    assert_int_equal(store_query(f->st, "SELECT count(*) FROM u", NULL, 0, 0, STORE_QUERY_NOCACHE,
                                 count_row, &n),
                     HSB_OK);
    assert_int_equal(n, 2); /* 1 and 3; the failing job's 2 was rolled back with it */
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
}

/* ---- replay: a failing job makes the writer run its group again, with savepoints ------ */

typedef struct replay_job {
    sqlite3 *check; /* raw read connection, used by the completion (writer thread) */
    int runs;       /* how many times run was called */
    hsb_err err;
    int visible; /* rows with id 10 seen by the completion: 1 once committed */
} replay_job;

static hsb_err replay_run(store_conn *c, void *arg)
{
    replay_job *j = arg;
    j->runs++;
    return store_conn_exec(c, "INSERT INTO r(id) VALUES (10)", NULL, 0, NULL);
}

static void replay_done(void *arg, hsb_err err)
{
    replay_job *j = arg;
    sqlite3_stmt *q;
    j->err = err;
    /* Another connection sees only committed data: the completion must come after the COMMIT. */
    sqlite3_prepare_v2(j->check, "SELECT count(*) FROM r WHERE id = 10", -1, &q, NULL);
    if (sqlite3_step(q) == SQLITE_ROW) {
        j->visible = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
}

typedef struct take_result {
    hsb_err err;
    uint64_t msg_id;
    char reason[16];
} take_result;

static void replay_take_done(void *arg, hsb_err err, const store_dlq_rec *rec)
{
    take_result *t = arg;
    t->err = err;
    if (rec != NULL) {
        t->msg_id = rec->msg_id;
        snprintf(t->reason, sizeof(t->reason), "%s", rec->reason);
    }
}

static bool dlq_first_id(void *arg, const store_dlq_rec *rec)
{
    *(uint64_t *)arg = rec->id;
    return false;
}

/*
 * One group (held together behind a gate) with two failing jobs among jobs of every kind: the
 * fast pass stops at the first failure, the writer rolls back and replays the group with
 * savepoints. Each failing job reports its own error; every other job commits, its completion
 * sees its row committed, the audit chain has no gap (the rolled-back appends were forgotten) and
 * the dead letter taken in the rolled-back pass is taken again (its copy freed: ASan).
 */
static void test_replay_failing_jobs_alone(void **state)
{
    fixture *f = *state;
    gate g;
    replay_job rj = {.err = HSB_EINTERNAL};
    take_result tk = {.err = HSB_EINTERNAL};
    hsb_err e_a1 = HSB_EINTERNAL, e_a2 = HSB_EINTERNAL, e_dup = HSB_EINTERNAL;
    hsb_err e_txn = HSB_EINTERNAL, e_2 = HSB_EINTERNAL, e_3 = HSB_EINTERNAL;
    hsb_err e_dlq = HSB_EINTERNAL;
    store_pool_stats before, after;
    store_audit_report rep;
    uint64_t dl_id = 0, dl_count = 99;
    int64_t n = -1;

    create_table(f->st, "CREATE TABLE r(id INTEGER PRIMARY KEY)");
    store_dlq_rec rec = {
        .msg_id = 77, .agent = "a", .reason = "expired", .envelope = "env", .envelope_len = 3};
    assert_int_equal(store_dlq_add(f->st, &rec, 0, record_err, &e_dlq), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(e_dlq, HSB_OK);
    assert_int_equal(store_dlq_list(f->st, 0, 1, dlq_first_id, &dl_id), HSB_OK);
    assert_true(dl_id > 0);
    assert_int_equal(sqlite3_open_v2(f->db.path, &rj.check, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    store_pool_stats_get(store_pool_of(f->st), &before);

    gate_hold(f->st, &g);
    hsb_stmt dup = {"INSERT INTO r(id) VALUES (10)", NULL, 0}; /* after replay_run's: fails */
    hsb_stmt two = {"INSERT INTO r(id) VALUES (2)", NULL, 0};
    hsb_stmt txn = {"SAVEPOINT mine", NULL, 0}; /* transaction control: refused */
    hsb_stmt three = {"INSERT INTO r(id) VALUES (3)", NULL, 0};
    assert_int_equal(store_audit_append(f->st, "replay", "first", 0, record_err, &e_a1), HSB_OK);
    assert_int_equal(store_dlq_take(f->st, dl_id, replay_take_done, &tk), HSB_OK);
    assert_int_equal(store_pool_submit(store_pool_of(f->st), replay_run, replay_done, &rj, 0),
                     HSB_OK);
    assert_int_equal(store_write(f->st, &dup, 1, 0, record_err, &e_dup), HSB_OK);
    assert_int_equal(store_audit_append(f->st, "replay", "second", 0, record_err, &e_a2), HSB_OK);
    assert_int_equal(store_write(f->st, &two, 1, 0, record_err, &e_2), HSB_OK);
    assert_int_equal(store_write(f->st, &txn, 1, 0, record_err, &e_txn), HSB_OK);
    assert_int_equal(store_write(f->st, &three, 1, 0, record_err, &e_3), HSB_OK);
    gate_release(&g);
    assert_int_equal(store_sync(f->st), HSB_OK);

    /* The failing jobs fail alone, each with its own error. */
    assert_int_equal(e_dup, HSB_EIO);
    assert_int_equal(e_txn, HSB_EINVAL);
    /* Everything else committed, and completions ran after the COMMIT. */
    assert_int_equal(e_a1, HSB_OK);
    assert_int_equal(e_a2, HSB_OK);
    assert_int_equal(e_2, HSB_OK);
    assert_int_equal(e_3, HSB_OK);
    assert_int_equal(rj.err, HSB_OK);
    assert_int_equal(rj.visible, 1);
    assert_int_equal(rj.runs, 2); /* the fast pass, then the replay */
    assert_int_equal(tk.err, HSB_OK);
    assert_int_equal(tk.msg_id, 77);
    assert_string_equal(tk.reason, "expired");

    store_pool_stats_get(store_pool_of(f->st), &after);
    assert_int_equal(after.replays, before.replays + 1);
    assert_int_equal(after.groups_failed, before.groups_failed);
    assert_int_equal(after.jobs_failed, before.jobs_failed + 2);
    assert_true(after.max_group >= 9); /* the gate and the 8 jobs in one transaction */

    assert_int_equal(store_query(f->st, "SELECT count(*) FROM r", NULL, 0, 0, STORE_QUERY_NOCACHE,
                                 count_row, &n),
                     HSB_OK);
    assert_int_equal(n, 3); /* 10, 2, 3 */
    assert_int_equal(store_dlq_count(f->st, &dl_count), HSB_OK);
    assert_int_equal(dl_count, 0);
    /* The chain has seq 1 and 2, linked: the appends of the rolled-back pass left no trace. */
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.rows, 2);
    assert_int_equal(rep.last_seq, 2);

    sqlite3_close(rj.check);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
}

static hsb_err lose_txn_run(store_conn *c, void *arg)
{
    /* What SQLite does on SQLITE_FULL or SQLITE_IOERR: the whole transaction is rolled back. */
    sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
    return HSB_EIO;
}

static void test_lost_transaction_fails_group(void **state)
{
    fixture *f = *state;
    gate g;
    hsb_err e1 = HSB_OK, e2 = HSB_OK, e3 = HSB_OK, e4 = HSB_EINTERNAL;
    int64_t n = -1;

    create_table(f->st, "CREATE TABLE l(id INTEGER PRIMARY KEY)");
    gate_hold(f->st, &g);
    hsb_stmt a = {"INSERT INTO l(id) VALUES (1)", NULL, 0};
    hsb_stmt c = {"INSERT INTO l(id) VALUES (3)", NULL, 0};
    assert_int_equal(store_write(f->st, &a, 1, 0, record_err, &e1), HSB_OK);
    assert_int_equal(store_pool_submit(store_pool_of(f->st), lose_txn_run, record_err, &e2, 0),
                     HSB_OK);
    assert_int_equal(store_write(f->st, &c, 1, 0, record_err, &e3), HSB_OK);
    gate_release(&g);
    assert_int_equal(store_sync(f->st), HSB_OK);
    /* Nothing of the group was committed, and every job says so. */
    assert_int_equal(e1, HSB_EIO);
    assert_int_equal(e2, HSB_EIO);
    assert_int_equal(e3, HSB_EIO);
    assert_int_equal(store_query(f->st, "SELECT count(*) FROM l", NULL, 0, 0, STORE_QUERY_NOCACHE,
                                 count_row, &n),
                     HSB_OK);
    assert_int_equal(n, 0);
    /* The next group works. */
    assert_int_equal(store_write(f->st, &c, 1, 0, record_err, &e4), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(e4, HSB_OK);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
}

static void test_txn_control_refused(void **state)
{
    fixture *f = *state;
    hsb_err e = HSB_OK;
    hsb_stmt s = {"COMMIT", NULL, 0};
    assert_int_equal(store_write(f->st, &s, 1, 0, record_err, &e), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(e, HSB_EINVAL);
    assert_int_equal(store_write(f->st, NULL, 0, 0, NULL, NULL), HSB_EINVAL);
}

/* ---- synchronous, readers, statement cache, schema ------------------------------------- */

static hsb_err pragma_sync_run(store_conn *c, void *arg)
{
    sqlite3_stmt *q;
    sqlite3_prepare_v2(c->db, "PRAGMA synchronous", -1, &q, NULL);
    if (sqlite3_step(q) == SQLITE_ROW) {
        *(int *)arg = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    return HSB_OK;
}

static bool text_row(void *arg, const hsb_value *cols, size_t n)
{
    snprintf(arg, 16, "%s", (const char *)cols[0].u.s.p);
    return true;
}

static void test_synchronous_and_wal(void **state)
{
    fixture *f = *state;
    int level = -1;
    char mode[16] = "";

    assert_int_equal(store_pool_submit(store_pool_of(f->st), pragma_sync_run, NULL, &level, 0),
                     HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(level, 2); /* FULL */
    /* A PRAGMA is not read-only for sqlite3_stmt_readonly: refused on the read path. */
    assert_int_equal(
        store_query(f->st, "PRAGMA journal_mode", NULL, 0, 0, STORE_QUERY_NOCACHE, text_row, mode),
        HSB_EINVAL);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->db.path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    snprintf(mode, sizeof(mode), "%s", (const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    sqlite3_close(db);
    assert_string_equal(mode, "wal");

    assert_int_equal(store_close(f->st), HSB_OK);
    f->st = fixture_open(f, STORE_SYNC_NORMAL);
    level = -1;
    assert_int_equal(store_pool_submit(store_pool_of(f->st), pragma_sync_run, NULL, &level, 0),
                     HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(level, 1); /* NORMAL */
}

static void test_reader_checkout_timeout(void **state)
{
    fixture *f = *state;
    store_pool *p = store_pool_of(f->st);
    store_conn *a, *b, *c;
    store_pool_stats ps;

    assert_int_equal(store_pool_checkout(p, 100, &a), HSB_OK);
    assert_int_equal(store_pool_checkout(p, 100, &b), HSB_OK);
    assert_ptr_not_equal(a, b);
    assert_false(a->writer);
    store_pool_stats_get(p, &ps);
    assert_int_equal(ps.readers, 2);
    assert_int_equal(ps.readers_busy, 2);
    assert_int_equal(store_pool_checkout(p, 50, &c), HSB_ETIMEDOUT);
    /* A query on a third thread-equivalent gives up the same way. */
    int64_t n;
    assert_int_equal(store_query(f->st, "SELECT 1", NULL, 0, 0, STORE_QUERY_NOCACHE, count_row, &n),
                     HSB_ETIMEDOUT);
    store_pool_checkin(p, a);
    assert_int_equal(store_pool_checkout(p, 50, &c), HSB_OK);
    assert_ptr_equal(c, a);
    store_pool_checkin(p, c);
    store_pool_checkin(p, b);
    store_pool_stats_get(p, &ps);
    assert_true(ps.checkout_timeouts >= 2);
    assert_true(ps.checkout_waits >= 2);
    assert_true(ps.wait_ns >= 50ull * 1000000ull);
    assert_int_equal(ps.readers_busy, 0);
    assert_true(ps.reader_utilization > 0.0 && ps.reader_utilization <= 1.0);
}

typedef struct waiter {
    store_pool *p;
    hsb_err err;
} waiter;

static void *waiter_main(void *arg)
{
    waiter *w = arg;
    store_conn *c;
    w->err = store_pool_checkout(w->p, 5000, &c);
    if (w->err == HSB_OK) {
        store_pool_checkin(w->p, c);
    }
    return NULL;
}

static void test_reader_checkout_waits(void **state)
{
    fixture *f = *state;
    store_pool *p = store_pool_of(f->st);
    store_conn *a, *b;
    pthread_t th;
    waiter w = {p, HSB_EINTERNAL};

    assert_int_equal(store_pool_checkout(p, 100, &a), HSB_OK);
    assert_int_equal(store_pool_checkout(p, 100, &b), HSB_OK);
    pthread_create(&th, NULL, waiter_main, &w);
    usleep(20000);
    store_pool_checkin(p, b);
    pthread_join(th, NULL);
    assert_int_equal(w.err, HSB_OK);
    store_pool_checkin(p, a);
}

static void test_stmt_cache_reuse(void **state)
{
    fixture *f = *state;
    store_pool *p = store_pool_of(f->st);
    store_conn *c;
    store_stmt *s1, *s2, *s3;
    store_stmt_stats ss0, ss;

    assert_int_equal(store_pool_checkout(p, 100, &c), HSB_OK);
    store_stmt_stats_get(c->stmts, &ss0);
    assert_int_equal(store_conn_stmt(c, "SELECT count(*) FROM durable", &s1), HSB_OK);
    assert_int_equal(s1->n_reads, 1);
    assert_string_equal(s1->reads[0], "durable"); /* count(*): SQLITE_READ with no column */
    assert_int_equal(s1->n_writes, 0);
    /* In use: the same text cannot be handed out twice on one connection. */
    assert_int_equal(store_conn_stmt(c, "SELECT count(*) FROM durable", &s3), HSB_EINVAL);
    store_conn_put(c, s1);
    assert_int_equal(store_conn_stmt(c, "SELECT count(*) FROM durable", &s2), HSB_OK);
    assert_ptr_equal(s1, s2);
    store_conn_put(c, s2);
    assert_int_equal(store_conn_stmt(c,
                                     "SELECT d.id, a.seq FROM durable d JOIN audit a ON "
                                     "a.seq = d.id",
                                     &s3),
                     HSB_OK);
    assert_int_equal(s3->n_reads, 2);
    store_conn_put(c, s3);
    store_stmt_stats_get(c->stmts, &ss);
    assert_int_equal(ss.prepares - ss0.prepares, 2);
    assert_int_equal(ss.hits - ss0.hits, 1);
    assert_int_equal(store_conn_stmt(c, "SELECT 1; SELECT 2", &s3), HSB_EINVAL);
    assert_int_equal(store_conn_stmt(c, "SELEKT 1", &s3), HSB_EIO);
    assert_int_equal(store_conn_stmt(c, "SELECT 1;  ", &s3), HSB_OK);
    store_conn_put(c, s3);
    store_pool_checkin(p, c);
}

static void test_stmt_cache_trim(void **state)
{
    fixture *f = *state;
    store_pool *p = store_pool_of(f->st);
    store_conn *c;
    store_stmt *s, *hot;
    store_stmt_stats ss;
    char sql[64];

    assert_int_equal(store_pool_checkout(p, 100, &c), HSB_OK);
    assert_int_equal(store_conn_stmt(c, "SELECT 'hot'", &hot), HSB_OK);
    for (int i = 0; i < 40; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", i);
        assert_int_equal(store_conn_stmt(c, sql, &s), HSB_OK);
        store_conn_put(c, s);
    }
    store_stmt_cache_trim(c->stmts, 16);
    store_stmt_stats_get(c->stmts, &ss);
    assert_true(ss.entries <= 8);
    assert_true(ss.trimmed >= 33);
    /* In use: kept, and still valid. */
    assert_int_equal(sqlite3_step(hot->stmt), SQLITE_ROW);
    store_conn_put(c, hot);
    /* The most recently used survive. */
    uint64_t prepares = ss.prepares;
    assert_int_equal(store_conn_stmt(c, "SELECT 39", &s), HSB_OK);
    store_conn_put(c, s);
    store_stmt_stats_get(c->stmts, &ss);
    assert_int_equal(ss.prepares, prepares);
    assert_int_equal(store_conn_stmt(c, "SELECT 0", &s), HSB_OK);
    store_conn_put(c, s);
    store_stmt_stats_get(c->stmts, &ss);
    assert_int_equal(ss.prepares, prepares + 1);
    store_pool_checkin(p, c);
}

static hsb_err writes_run(store_conn *c, void *arg)
{
    store_stmt *s;
    hsb_err err = store_conn_stmt(c,
                                  "INSERT INTO kv(ns, key, value) VALUES ('a', 'b', 'c') "
                                  "ON CONFLICT(ns, key) DO UPDATE SET value = excluded.value",
                                  &s);
    if (err != HSB_OK) {
        return err;
    }
    *(bool *)arg = s->n_writes == 1 && strcmp(s->writes[0], "kv") == 0;
    store_conn_put(c, s);
    return HSB_OK;
}

static void test_stmt_write_tables(void **state)
{
    fixture *f = *state;
    bool ok = false;
    assert_int_equal(store_pool_submit(store_pool_of(f->st), writes_run, NULL, &ok, 0), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_true(ok);
}

static void test_migrations_idempotent(void **state)
{
    fixture *f = *state;
    sqlite3 *db;
    int version = -1, applied = -1;

    assert_int_equal(store_close(f->st), HSB_OK);
    f->st = NULL;
    assert_int_equal(sqlite3_open(f->db.path, &db), SQLITE_OK);
    assert_int_equal(store_schema_version(db, &version), HSB_OK);
    assert_int_equal(version, STORE_SCHEMA_VERSION);
    assert_int_equal(store_schema_migrate(db, &applied), HSB_OK);
    assert_int_equal(applied, 0);
    /* A database from the future is refused. */
    assert_int_equal(
        sqlite3_exec(db, "INSERT INTO schema_version VALUES (999, 0)", NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(store_schema_migrate(db, &applied), HSB_EINVAL);
    assert_int_equal(
        sqlite3_exec(db, "DELETE FROM schema_version WHERE version = 999", NULL, NULL, NULL),
        SQLITE_OK);
    sqlite3_close(db);

    /* Reopen twice: nothing is applied again and the data stays. */
    f->st = fixture_open(f, STORE_SYNC_FULL);
    assert_int_equal(store_close(f->st), HSB_OK);
    f->st = fixture_open(f, STORE_SYNC_FULL);
    int64_t n = -1;
    assert_int_equal(store_query(f->st, "SELECT count(*) FROM schema_version", NULL, 0, 0,
                                 STORE_QUERY_NOCACHE, count_row, &n),
                     HSB_OK);
    assert_int_equal(n, STORE_SCHEMA_VERSION);

    /* A fresh empty file gets every migration. */
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    assert_int_equal(store_schema_migrate(db, &applied), HSB_OK);
    assert_int_equal(applied, STORE_SCHEMA_VERSION);
    sqlite3_close(db);
}

static void count_done(void *arg, hsb_err err)
{
    if (err == HSB_OK) {
        (*(int *)arg)++;
    }
}

typedef struct closer {
    store *st;
    hsb_err err;
} closer;

static void *closer_main(void *arg)
{
    closer *c = arg;
    c->err = store_close(c->st);
    return NULL;
}

/* store_close finishes what was queued: every completion runs, and the rows are committed. */
static void test_close_drains_queue(void **state)
{
    fixture *f = *state;
    gate g;
    int done = 0;
    pthread_t th;

    create_table(f->st, "CREATE TABLE q(id INTEGER PRIMARY KEY)");
    gate_hold(f->st, &g);
    for (int i = 0; i < 100; i++) {
        hsb_value v = {.type = HSB_VALUE_INT, .u.i = i};
        hsb_stmt s = {"INSERT INTO q(id) VALUES (?)", &v, 1};
        assert_int_equal(store_write(f->st, &s, 1, 0, count_done, &done), HSB_OK);
    }
    closer c = {f->st, HSB_EINTERNAL};
    pthread_create(&th, NULL, closer_main, &c);
    usleep(20000); /* let close start: it must wait for the writer */
    gate_release(&g);
    pthread_join(th, NULL);
    assert_int_equal(c.err, HSB_OK);
    assert_int_equal(done, 100);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);

    f->st = fixture_open(f, STORE_SYNC_FULL);
    int64_t n = -1;
    assert_int_equal(store_query(f->st, "SELECT count(*) FROM q", NULL, 0, 0, 0, count_row, &n),
                     HSB_OK);
    assert_int_equal(n, 100);
}

static void test_open_errors(void **state)
{
    (void)state;
    store_config cfg;
    store *st = NULL;
    store_config_defaults(&cfg);
    cfg.path = "/nonexistent-dir/x/hsbus.db";
    assert_int_equal(store_open(&cfg, &st), HSB_EIO);
    cfg.path = "";
    assert_int_equal(store_open(&cfg, &st), HSB_EINVAL);
    assert_int_equal(store_close(NULL), HSB_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failing_job_rolled_back_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_failing_jobs_alone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_transaction_fails_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_control_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_synchronous_and_wal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_checkout_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reader_checkout_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stmt_cache_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stmt_cache_trim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stmt_write_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migrations_idempotent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_drains_queue, setup, teardown),
        cmocka_unit_test(test_open_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
