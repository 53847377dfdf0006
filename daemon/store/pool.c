/*
 * daemon/store/pool.c - writer thread with group commit, reader checkout. See pool.h.
 *
 * Design note. The writer owns p->writer exclusively once started; the queue (jobs, closing) and
 * the counters are protected by p->mu. The writer holds p->mu only to take the queue and to add
 * its counters: SQL, hooks and completions all run unlocked. Readers are a free list under the
 * same mutex with their own condition variable (checkouts wait on it, with a monotonic deadline).
 */
#include "daemon/store/pool.h"

#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daemon/store/schema.h"

/* Prepared statements kept per connection at most (agents may use many distinct texts). */
#define STORE_POOL_STMT_MAX 512

typedef struct store_job {
    struct store_job *next;
    store_job_run_fn run;
    store_job_done_fn done;
    void *arg;
    hsb_err err;
} store_job;

struct store_pool {
    store_pool_config cfg;
    store_pool_hooks hooks;

    pthread_mutex_t mu;
    pthread_cond_t writer_cv; /* jobs queued or closing */
    pthread_cond_t reader_cv; /* a reader was checked in */

    /* p->mu */
    store_job *head, *tail;
    size_t queued;
    bool closing;
    bool started;
    store_conn *free_readers;
    unsigned readers_busy;
    store_pool_stats st;
    uint64_t reader_busy_ns;
    uint64_t opened_ns;

    pthread_t writer_thread;
    store_conn writer;
    store_conn *readers;
};

uint64_t store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t store_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

/* ---- connections ------------------------------------------------------------------------ */

hsb_err store_conn_stmt(store_conn *c, const char *sql, store_stmt **out)
{
    hsb_err err = store_stmt_get(c->stmts, sql, out);
    if (err != HSB_OK || !c->writer) {
        return err;
    }
    store_stmt *s = *out;
    if (s->ddl) {
        c->written_all = true;
    }
    for (size_t i = 0; i < s->n_writes; i++) {
        bool seen = false;
        for (size_t j = 0; j < c->n_written; j++) {
            if (c->written[j] == s->writes[i] || strcmp(c->written[j], s->writes[i]) == 0) {
                seen = true;
                break;
            }
        }
        if (seen) {
            continue;
        }
        if (c->n_written == c->cap_written) {
            size_t cap = c->cap_written ? c->cap_written * 2 : 8;
            const char **nw = realloc(c->written, cap * sizeof(*nw));
            if (nw == NULL) {
                c->written_all = true; /* unknown set: invalidate everything */
                continue;
            }
            c->written = nw;
            c->cap_written = cap;
        }
        c->written[c->n_written++] = s->writes[i];
    }
    return HSB_OK;
}

void store_conn_put(store_conn *c, store_stmt *s)
{
    store_stmt_put(c->stmts, s);
}

hsb_err store_conn_exec(store_conn *c, const char *sql, const hsb_value *params, size_t n,
                        int *changes)
{
    store_stmt *s;
    hsb_err err = store_conn_stmt(c, sql, &s);
    int rc;

    if (err != HSB_OK) {
        return err;
    }
    err = store_stmt_bind(s, params, n);
    if (err != HSB_OK) {
        goto out;
    }
    while ((rc = sqlite3_step(s->stmt)) == SQLITE_ROW) {
    }
    if (rc != SQLITE_DONE) {
        err = store_err_from_sqlite(rc);
        if (err == HSB_EBUSY) {
            err = HSB_EIO;
        }
        goto out;
    }
    if (changes != NULL) {
        *changes = sqlite3_changes(c->db);
    }
out:
    store_conn_put(c, s);
    return err;
}

static hsb_err store_pool_conn_open(store_pool *p, store_conn *c, bool writer)
{
    int flags = SQLITE_OPEN_NOMUTEX |
                (writer ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY);
    hsb_err err = HSB_EIO;
    char sql[128];

    memset(c, 0, sizeof(*c));
    c->writer = writer;
    if (sqlite3_open_v2(p->cfg.path, &c->db, flags, NULL) != SQLITE_OK) {
        goto fail;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, (int)p->cfg.busy_timeout_ms);
    if (writer) {
        sqlite3_stmt *st = NULL;
        bool wal = false;
        if (sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(st, 0);
            wal = mode != NULL && strcmp(mode, "wal") == 0;
        }
        sqlite3_finalize(st);
        if (!wal) {
            goto fail;
        }
        snprintf(sql, sizeof(sql), "PRAGMA synchronous=%s; PRAGMA foreign_keys=ON",
                 p->cfg.sync_full ? "FULL" : "NORMAL");
        if (sqlite3_exec(c->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
            goto fail;
        }
        err = store_schema_migrate(c->db, NULL);
        if (err != HSB_OK) {
            goto fail;
        }
    } else if (sqlite3_exec(c->db, "PRAGMA foreign_keys=ON", NULL, NULL, NULL) != SQLITE_OK) {
        goto fail;
    }
    err = store_stmt_cache_new(c->db, &c->stmts);
    if (err != HSB_OK) {
        goto fail;
    }
    return HSB_OK;

fail:
    sqlite3_close(c->db);
    c->db = NULL;
    return err;
}

static int store_pool_conn_close(store_conn *c)
{
    store_stmt_cache_free(c->stmts);
    c->stmts = NULL;
    free(c->written);
    c->written = NULL;
    int rc = sqlite3_close(c->db);
    c->db = NULL;
    return rc;
}

/* ---- lifecycle -------------------------------------------------------------------------- */

hsb_err store_pool_open(const store_pool_config *cfg, store_pool **out)
{
    store_pool *p;
    hsb_err err;
    pthread_condattr_t ca;

    if (cfg == NULL || cfg->path == NULL) {
        return HSB_EINVAL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return HSB_ENOMEM;
    }
    p->cfg = *cfg;
    if (p->cfg.readers == 0) {
        p->cfg.readers = 2;
    }
    if (p->cfg.busy_timeout_ms == 0) {
        p->cfg.busy_timeout_ms = 5000;
    }
    if (p->cfg.queue_max == 0) {
        p->cfg.queue_max = 65536;
    }
    if (p->cfg.group_max == 0) {
        p->cfg.group_max = 4096;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->writer_cv, &ca);
    pthread_cond_init(&p->reader_cv, &ca);
    pthread_condattr_destroy(&ca);

    err = store_pool_conn_open(p, &p->writer, true);
    if (err != HSB_OK) {
        goto fail_sync;
    }
    p->readers = calloc(p->cfg.readers, sizeof(*p->readers));
    if (p->readers == NULL) {
        err = HSB_ENOMEM;
        goto fail_writer;
    }
    for (unsigned i = 0; i < p->cfg.readers; i++) {
        err = store_pool_conn_open(p, &p->readers[i], false);
        if (err != HSB_OK) {
            for (unsigned j = 0; j < i; j++) {
                store_pool_conn_close(&p->readers[j]);
            }
            goto fail_readers;
        }
    }
    for (unsigned i = p->cfg.readers; i-- > 0;) {
        p->readers[i].next_free = p->free_readers;
        p->free_readers = &p->readers[i];
    }
    p->st.readers = p->cfg.readers;
    p->opened_ns = store_now_ns();
    *out = p;
    return HSB_OK;

fail_readers:
    free(p->readers);
fail_writer:
    store_pool_conn_close(&p->writer);
fail_sync:
    pthread_cond_destroy(&p->reader_cv);
    pthread_cond_destroy(&p->writer_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return err;
}

void store_pool_set_hooks(store_pool *p, const store_pool_hooks *hooks)
{
    p->hooks = *hooks;
}

/* ---- the writer ------------------------------------------------------------------------- */

static hsb_err store_pool_exec_simple(store_conn *c, const char *sql)
{
    return store_conn_exec(c, sql, NULL, 0, NULL);
}

/* Takes up to max queued jobs off the queue as a NULL-terminated list; returns how many. */
static size_t store_pool_take_locked(store_pool *p, size_t max, store_job **first, store_job **last)
{
    size_t n = 0;
    store_job *l = NULL;

    *first = p->head;
    for (store_job *j = p->head; j != NULL && n < max; j = j->next) {
        l = j;
        n++;
    }
    if (n == 0) {
        *first = *last = NULL;
        return 0;
    }
    p->head = l->next;
    if (p->head == NULL) {
        p->tail = NULL;
    }
    l->next = NULL;
    p->queued -= n;
    *last = l;
    return n;
}

/*
 * The fast pass: runs jobs back to back in the group's transaction, without savepoints. A
 * SAVEPOINT and a RELEASE per job cost two more statements on the writer thread, and they are
 * needed only when a job fails, which is rare. Stops at the first job that fails and returns it
 * (its err set); NULL when every job succeeded. The caller then either replays the group with
 * savepoints (store_pool_run_safe) or, when SQLite lost the transaction itself, fails the group.
 */
static store_job *store_pool_run_fast(store_conn *w, store_job *j)
{
    for (; j != NULL; j = j->next) {
        j->err = j->run != NULL ? j->run(w, j->arg) : HSB_OK;
        if (j->err != HSB_OK) {
            return j;
        }
    }
    return NULL;
}

/* The safe pass: runs jobs each in a savepoint, so that a failing job is rolled back alone.
 * Returns false when SQLite rolled the whole transaction back on its own (SQLITE_FULL,
 * SQLITE_IOERR, SQLITE_NOMEM...): the group is lost, the rest is skipped (err = HSB_EIO). */
static bool store_pool_run_safe(store_conn *w, store_job *j)
{
    for (; j != NULL; j = j->next) {
        if (j->run == NULL) {
            j->err = HSB_OK;
            continue;
        }
        j->err = store_pool_exec_simple(w, "SAVEPOINT store_job");
        if (j->err != HSB_OK) {
            continue;
        }
        j->err = j->run(w, j->arg);
        if (j->err != HSB_OK) {
            if (sqlite3_get_autocommit(w->db)) {
                for (j = j->next; j != NULL; j = j->next) {
                    j->err = HSB_EIO;
                }
                return false;
            }
            store_pool_exec_simple(w, "ROLLBACK TO store_job");
        }
        store_pool_exec_simple(w, "RELEASE store_job");
    }
    return true;
}

/*
 * Runs jobs (appended to the group) in the current pass. In the fast pass, a failing job makes
 * the writer roll the transaction back and run the whole group again, jobs..last included, in the
 * safe pass: the failing job then fails alone with its own error and every other job still
 * commits with the group. The group stays in the safe pass (*safe) until its COMMIT. Returns
 * false when the group is lost (every job not yet failed gets HSB_EIO at COMMIT time).
 */
static bool store_pool_run_more(store_pool *p, store_job *group, store_job *jobs, bool *safe)
{
    store_conn *w = &p->writer;

    if (*safe) {
        return store_pool_run_safe(w, jobs);
    }
    store_job *failed = store_pool_run_fast(w, jobs);
    if (failed == NULL) {
        return true;
    }
    if (sqlite3_get_autocommit(w->db)) {
        /* SQLite rolled everything back by itself: as in the safe pass, the group is lost. */
        for (store_job *j = failed->next; j != NULL; j = j->next) {
            j->err = HSB_EIO;
        }
        return false;
    }
    *safe = true;
    sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
    if (p->hooks.before_replay != NULL) {
        p->hooks.before_replay(p->hooks.arg);
    }
    /* The tables written so far stay recorded: a superset only invalidates a little more. */
    hsb_err err = store_pool_exec_simple(w, "BEGIN IMMEDIATE");
    if (err != HSB_OK) {
        for (store_job *j = group; j != NULL; j = j->next) {
            j->err = err == HSB_EBUSY ? HSB_EIO : err;
        }
        return false;
    }
    return store_pool_run_safe(w, group);
}

static void store_pool_run_group(store_pool *p, store_job *jobs, store_job *last, size_t n)
{
    store_conn *w = &p->writer;
    bool committed = false;
    bool safe = false;
    hsb_err err;
    uint64_t commit_ns = 0;
    uint64_t run_ns = 0;
    uint64_t failed = 0;

    uint64_t t_begin = store_now_ns();

    w->n_written = 0;
    w->written_all = false;

    err = store_pool_exec_simple(w, "BEGIN IMMEDIATE");
    if (err != HSB_OK) {
        for (store_job *j = jobs; j != NULL; j = j->next) {
            j->err = err == HSB_EBUSY ? HSB_EIO : err;
        }
        goto hooks;
    }
    bool alive = store_pool_run_more(p, jobs, jobs, &safe);
    /* Late joiners: jobs queued while these ran share this COMMIT (and its fsync) too. */
    while (alive && n < p->cfg.group_max) {
        store_job *more, *more_last;
        pthread_mutex_lock(&p->mu);
        size_t m = store_pool_take_locked(p, p->cfg.group_max - n, &more, &more_last);
        pthread_mutex_unlock(&p->mu);
        if (m == 0) {
            break;
        }
        last->next = more;
        last = more_last;
        n += m;
        alive = store_pool_run_more(p, jobs, more, &safe);
    }
    if (p->hooks.before_commit != NULL && (w->n_written > 0 || w->written_all)) {
        p->hooks.before_commit(p->hooks.arg, w->written, w->n_written, w->written_all);
    }
    uint64_t t0 = store_now_ns();
    run_ns = t0 - t_begin;
    err = alive ? store_pool_exec_simple(w, "COMMIT") : HSB_EIO;
    commit_ns = store_now_ns() - t0;
    if (err == HSB_OK) {
        committed = true;
    } else {
        if (!sqlite3_get_autocommit(w->db)) {
            sqlite3_exec(w->db, "ROLLBACK", NULL, NULL, NULL);
        }
        for (store_job *j = jobs; j != NULL; j = j->next) {
            if (j->err == HSB_OK) {
                j->err = HSB_EIO;
            }
        }
    }

hooks:
    if (p->hooks.after_group != NULL) {
        p->hooks.after_group(p->hooks.arg, committed, w->written, w->n_written, w->written_all);
    }
    for (store_job *j = jobs; j != NULL; j = j->next) {
        if (j->err != HSB_OK) {
            failed++;
        }
    }

    pthread_mutex_lock(&p->mu);
    p->st.jobs += n;
    p->st.jobs_failed += failed;
    p->st.groups++;
    if (!committed) {
        p->st.groups_failed++;
    }
    if (safe) {
        p->st.replays++;
    }
    if (n > p->st.max_group) {
        p->st.max_group = n;
    }
    p->st.commit_ns += commit_ns;
    p->st.run_ns += run_ns;
    pthread_mutex_unlock(&p->mu);

    /* Completions: after COMMIT, in order, no lock held. */
    uint64_t t_done = store_now_ns();
    while (jobs != NULL) {
        store_job *next = jobs->next;
        if (jobs->done != NULL) {
            jobs->done(jobs->arg, jobs->err);
        }
        free(jobs);
        jobs = next;
    }
    t_done = store_now_ns() - t_done;
    /* No table-set pointer is held between groups: bound the statement cache here. */
    w->n_written = 0;
    store_stmt_cache_trim(w->stmts, STORE_POOL_STMT_MAX);
    pthread_mutex_lock(&p->mu);
    p->st.done_ns += t_done;
    pthread_mutex_unlock(&p->mu);
}

static void *store_pool_writer_main(void *arg)
{
    store_pool *p = arg;

    pthread_setname_np(pthread_self(), "hsb-store-w");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->head == NULL && !p->closing) {
            pthread_cond_wait(&p->writer_cv, &p->mu);
        }
        if (p->head == NULL) {
            break; /* closing and drained */
        }
        store_job *first, *last;
        size_t n = store_pool_take_locked(p, p->cfg.group_max, &first, &last);
        pthread_mutex_unlock(&p->mu);

        store_pool_run_group(p, first, last, n);

        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

hsb_err store_pool_start(store_pool *p)
{
    if (pthread_create(&p->writer_thread, NULL, store_pool_writer_main, p) != 0) {
        return HSB_ENOMEM;
    }
    pthread_mutex_lock(&p->mu);
    p->started = true;
    pthread_mutex_unlock(&p->mu);
    return HSB_OK;
}

hsb_err store_pool_submit(store_pool *p, store_job_run_fn run, store_job_done_fn done, void *arg,
                          unsigned flags)
{
    store_job *j = malloc(sizeof(*j));
    if (j == NULL) {
        return HSB_ENOMEM;
    }
    j->next = NULL;
    j->run = run;
    j->done = done;
    j->arg = arg;
    j->err = HSB_OK;

    pthread_mutex_lock(&p->mu);
    if (p->closing || !p->started) {
        pthread_mutex_unlock(&p->mu);
        free(j);
        return HSB_ECLOSED;
    }
    if (p->queued >= p->cfg.queue_max && !(flags & STORE_JOB_FORCE)) {
        p->st.refused_busy++;
        pthread_mutex_unlock(&p->mu);
        free(j);
        return HSB_EBUSY;
    }
    if (p->tail != NULL) {
        p->tail->next = j;
    } else {
        p->head = j;
    }
    p->tail = j;
    p->queued++;
    pthread_cond_signal(&p->writer_cv);
    pthread_mutex_unlock(&p->mu);
    return HSB_OK;
}

typedef struct store_pool_syncer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} store_pool_syncer;

static void store_pool_sync_done(void *arg, hsb_err err)
{
    store_pool_syncer *s = arg;
    (void)err;
    pthread_mutex_lock(&s->mu);
    s->done = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

hsb_err store_pool_sync(store_pool *p)
{
    store_pool_syncer s = {.done = false};
    hsb_err err;

    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    err = store_pool_submit(p, NULL, store_pool_sync_done, &s, STORE_JOB_FORCE);
    if (err == HSB_OK) {
        pthread_mutex_lock(&s.mu);
        while (!s.done) {
            pthread_cond_wait(&s.cv, &s.mu);
        }
        pthread_mutex_unlock(&s.mu);
    }
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    return err;
}

hsb_err store_pool_close(store_pool *p)
{
    hsb_err err = HSB_OK;
    bool started;

    if (p == NULL) {
        return HSB_OK;
    }
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    started = p->started;
    pthread_cond_broadcast(&p->writer_cv);
    pthread_cond_broadcast(&p->reader_cv);
    pthread_mutex_unlock(&p->mu);
    if (started) {
        pthread_join(p->writer_thread, NULL);
    }
    for (unsigned i = 0; i < p->cfg.readers; i++) {
        if (store_pool_conn_close(&p->readers[i]) != SQLITE_OK) {
            err = HSB_EIO;
        }
    }
    if (store_pool_conn_close(&p->writer) != SQLITE_OK) {
        err = HSB_EIO;
    }
    free(p->readers);
    pthread_cond_destroy(&p->reader_cv);
    pthread_cond_destroy(&p->writer_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return err;
}

/* ---- readers ---------------------------------------------------------------------------- */

hsb_err store_pool_checkout(store_pool *p, uint32_t timeout_ms, store_conn **out)
{
    struct timespec deadline;
    uint64_t t0 = 0;
    bool waited = false;
    hsb_err err = HSB_OK;

    pthread_mutex_lock(&p->mu);
    if (p->free_readers == NULL && !p->closing) {
        waited = true;
        t0 = store_now_ns();
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        while (p->free_readers == NULL && !p->closing) {
            if (pthread_cond_timedwait(&p->reader_cv, &p->mu, &deadline) == ETIMEDOUT) {
                break;
            }
        }
    }
    uint64_t now = store_now_ns();
    if (waited) {
        p->st.checkout_waits++;
        p->st.wait_ns += now - t0;
    }
    if (p->closing) {
        err = HSB_ECLOSED;
    } else if (p->free_readers == NULL) {
        p->st.checkout_timeouts++;
        err = HSB_ETIMEDOUT;
    } else {
        store_conn *c = p->free_readers;
        p->free_readers = c->next_free;
        c->next_free = NULL;
        c->checkout_ns = now;
        p->readers_busy++;
        p->st.checkouts++;
        *out = c;
    }
    pthread_mutex_unlock(&p->mu);
    return err;
}

void store_pool_checkin(store_pool *p, store_conn *c)
{
    store_stmt_cache_trim(c->stmts, STORE_POOL_STMT_MAX);
    uint64_t now = store_now_ns();

    pthread_mutex_lock(&p->mu);
    p->reader_busy_ns += now - c->checkout_ns;
    c->next_free = p->free_readers;
    p->free_readers = c;
    p->readers_busy--;
    pthread_cond_signal(&p->reader_cv);
    pthread_mutex_unlock(&p->mu);
}

void store_pool_stats_get(store_pool *p, store_pool_stats *st)
{
    uint64_t now = store_now_ns();

    pthread_mutex_lock(&p->mu);
    *st = p->st;
    st->queued = p->queued;
    st->readers_busy = p->readers_busy;
    uint64_t busy = p->reader_busy_ns;
    pthread_mutex_unlock(&p->mu);
    st->avg_group = st->groups ? (double)st->jobs / (double)st->groups : 0.0;
    st->avg_commit_us = st->groups ? (double)st->commit_ns / (double)st->groups / 1000.0 : 0.0;
    double span = (double)(now - p->opened_ns) * (double)st->readers;
    st->reader_utilization = span > 0 ? (double)busy / span : 0.0;
    if (st->reader_utilization > 1.0) {
        st->reader_utilization = 1.0;
    }
}
