/*
 * benches/bench_store.c - bench-store: the store's two promises, measured.
 *
 *   (a) point reads through the pool: cached (query cache hits) vs uncached (a reader connection,
 *       a cached prepared statement, one B-tree lookup). Goal: cached >= 5x uncached.
 *   (b) durable writes acknowledged after COMMIT with synchronous=FULL: 64 writer threads, each
 *       submitting one INSERT as a write job and waiting for its completion before the next, so
 *       the writer groups them (one fsync per group). Next to it, in the same run and the same
 *       directory, plain sqlite3 with the same settings (WAL, synchronous=FULL) on one connection:
 *       one row per transaction, and 100 rows per transaction. Goal: group commit >= 1x the
 *       100-rows-per-transaction reference. Rows are (id INTEGER PRIMARY KEY, v BLOB of 256 bytes),
 *       appended in id order on both sides. A third reference row, plain sqlite3 at N rows per
 *       transaction for N writers, is the physical bound: N closed-loop writers can never put more
 *       than N rows behind one fsync.
 *   (c) the same writers pipelined: each keeps --window (8) writes in flight, and each write
 *       still counts only when its own completion reports the COMMIT. This is how the broker's
 *       writers behave (a connection has several requests in flight, each with a batch).
 *
 * The machine's fsync time drifts, so the workloads run in interleaved rounds (5, or 1 with
 * --short) and each total is summed over its rounds.
 *
 * Output: a human table, then one JSON line. Percentiles come from every sample, sorted. Each
 * workload also reports the process's CPU time per operation (every thread), and the writes the
 * store writer thread's CPU time per row: on 2 shared cores these move much less with the other
 * load on the machine than the rates do, so they show what a change to the writer costs or saves.
 * Usage: bench-store [--short] [--dir DIR] [--seconds S] [--writers N] [--window W] [--writes-only]
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "daemon/store/store.h"

#define BENCH_STORE_BLOB    256
#define BENCH_STORE_ROWS    10000 /* rows in the read table */
#define BENCH_STORE_HOT     1000  /* ids the readers pick from */
#define BENCH_STORE_SAMPLES (1u << 20)
#define BENCH_STORE_READERS 2

typedef struct bench_store_opts {
    bool short_run;
    double seconds;
    int writers;
    char dir[256];
    bool writes_only;
    int window; /* writes each writer keeps in flight in the pipelined workload */
} bench_store_opts;

static uint64_t bench_store_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* CPU time (user + system) of the whole process, every thread: what a workload costs on this
 * machine's 2 cores, and unlike the rates, not changed much by other processes on the machine. */
static uint64_t bench_store_cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
           ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* CPU time of the process's thread named comm (the store's writer is "hsb-store-w"), from
 * /proc/self/task/TID/schedstat (Linux); 0 when there is none. The writer is the thread every write
 * waits for, so its CPU time per row is what bounds group commit on a machine with few cores. */
static uint64_t bench_store_thread_cpu_ns(const char *comm)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    uint64_t ns = 0;
    char path[300], buf[64];

    if (d == NULL) {
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL) {
            continue;
        }
        bool match = fgets(buf, sizeof(buf), f) != NULL && strncmp(buf, comm, strlen(comm)) == 0 &&
                     (buf[strlen(comm)] == '\n' || buf[strlen(comm)] == '\0');
        fclose(f);
        if (!match) {
            continue;
        }
        snprintf(path, sizeof(path), "/proc/self/task/%s/schedstat", e->d_name);
        f = fopen(path, "r");
        unsigned long long v = 0;
        if (f != NULL && fscanf(f, "%llu", &v) == 1) {
            ns += v;
        }
        if (f != NULL) {
            fclose(f);
        }
    }
    closedir(d);
    return ns;
}

/* ---- latency samples -------------------------------------------------------------------- */

typedef struct bench_store_lat {
    uint64_t *v;
    size_t n, cap;
} bench_store_lat;

static void bench_store_lat_add(bench_store_lat *l, uint64_t ns)
{
    if (l->n < l->cap) {
        l->v[l->n++] = ns;
    }
}

static int bench_store_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double bench_store_pct_us(bench_store_lat *l, double q)
{
    if (l->n == 0) {
        return 0.0;
    }
    size_t i = (size_t)(q * (double)(l->n - 1));
    return (double)l->v[i] / 1000.0;
}

static void bench_store_lat_merge(bench_store_lat *dst, const bench_store_lat *src)
{
    for (size_t i = 0; i < src->n; i++) {
        bench_store_lat_add(dst, src->v[i]);
    }
}

/* ---- results ---------------------------------------------------------------------------- */

typedef struct bench_store_result {
    const char *name;
    uint64_t ops;
    double secs;
    uint64_t cpu_ns;     /* process CPU time over every round */
    uint64_t writer_ns;  /* the store writer thread's CPU time over every round */
    bench_store_lat lat; /* every sample of every round */
    double p50_us, p99_us;
} bench_store_result;

static void bench_store_result_init(bench_store_result *r, const char *name)
{
    memset(r, 0, sizeof(*r));
    r->name = name;
    r->lat.cap = BENCH_STORE_SAMPLES * 2;
    r->lat.v = malloc(r->lat.cap * sizeof(uint64_t));
    if (r->lat.v == NULL) {
        r->lat.cap = 0;
    }
}

static void bench_store_result_finish(bench_store_result *r)
{
    qsort(r->lat.v, r->lat.n, sizeof(uint64_t), bench_store_cmp);
    r->p50_us = bench_store_pct_us(&r->lat, 0.50);
    r->p99_us = bench_store_pct_us(&r->lat, 0.99);
    free(r->lat.v);
    r->lat.v = NULL;
}

static double bench_store_rate(const bench_store_result *r)
{
    return r->secs > 0 ? (double)r->ops / r->secs : 0.0;
}

static double bench_store_cpu_us(const bench_store_result *r)
{
    return r->ops > 0 ? (double)r->cpu_ns / 1e3 / (double)r->ops : 0.0;
}

static double bench_store_writer_us(const bench_store_result *r)
{
    return r->ops > 0 ? (double)r->writer_ns / 1e3 / (double)r->ops : 0.0;
}

/* ---- (a) reads -------------------------------------------------------------------------- */

typedef struct bench_store_reader {
    store *st;
    unsigned flags;
    uint64_t until_ns;
    uint64_t ops;
    uint64_t errors;
    uint32_t seed;
    bench_store_lat lat;
} bench_store_reader;

static bool bench_store_row(void *arg, const hsb_value *cols, size_t n)
{
    *(size_t *)arg += n == 2 ? cols[1].u.s.n : 0;
    return true;
}

static void *bench_store_reader_main(void *arg)
{
    bench_store_reader *r = arg;
    size_t bytes = 0;
    do { /* at least one batch, even when the thread started late */
        for (int k = 0; k < 64; k++) {
            r->seed = r->seed * 1103515245u + 12345u;
            hsb_value id = {.type = HSB_VALUE_INT, .u.i = 1 + (r->seed >> 8) % BENCH_STORE_HOT};
            /* Time one query in 16: the clock reads would otherwise weigh on the cached path. */
            bool timed = (k & 15) == 0;
            uint64_t t0 = timed ? bench_store_now_ns() : 0;
            if (store_query(r->st, "SELECT id, v FROM bench_read WHERE id = ?", &id, 1, 0, r->flags,
                            bench_store_row, &bytes) != HSB_OK) {
                r->errors++;
            }
            if (timed) {
                bench_store_lat_add(&r->lat, bench_store_now_ns() - t0);
            }
            r->ops++;
        }
    } while (bench_store_now_ns() < r->until_ns);
    return NULL;
}

static int bench_store_reads(store *st, unsigned flags, double secs, bench_store_result *res)
{
    bench_store_reader rd[BENCH_STORE_READERS];
    pthread_t th[BENCH_STORE_READERS];
    uint64_t t0 = bench_store_now_ns();
    uint64_t c0 = bench_store_cpu_ns();
    uint64_t errors = 0;

    for (int i = 0; i < BENCH_STORE_READERS; i++) {
        rd[i] = (bench_store_reader){.st = st,
                                     .flags = flags,
                                     .seed = 7u + (uint32_t)i,
                                     .until_ns = t0 + (uint64_t)(secs * 1e9)};
        rd[i].lat.cap = BENCH_STORE_SAMPLES;
        rd[i].lat.v = malloc(rd[i].lat.cap * sizeof(uint64_t));
        pthread_create(&th[i], NULL, bench_store_reader_main, &rd[i]);
    }
    for (int i = 0; i < BENCH_STORE_READERS; i++) {
        pthread_join(th[i], NULL);
        res->ops += rd[i].ops;
        errors += rd[i].errors;
        bench_store_lat_merge(&res->lat, &rd[i].lat);
        free(rd[i].lat.v);
    }
    res->secs += (double)(bench_store_now_ns() - t0) / 1e9;
    res->cpu_ns += bench_store_cpu_ns() - c0;
    if (errors > 0) {
        fprintf(stderr, "bench-store: %llu read errors\n", (unsigned long long)errors);
        return -1;
    }
    return 0;
}

/* ---- (b) group-commit writes ------------------------------------------------------------ */

typedef struct bench_store_writer bench_store_writer;

/* One write in flight: the completion's argument. */
typedef struct bench_store_slot {
    bench_store_writer *w;
    uint64_t t0;
    bool busy;
} bench_store_slot;

struct bench_store_writer {
    store *st;
    int index;
    int window;       /* writes this writer keeps in flight; 1 = closed loop */
    int64_t *next_id; /* shared, atomic */
    uint64_t until_ns;
    uint64_t ops;
    uint64_t errors;
    bench_store_lat lat;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_flight;
    bench_store_slot *slots;
};

/* Runs on the store's writer thread after the COMMIT: the write is acknowledged. */
static void bench_store_write_done(void *arg, hsb_err err)
{
    bench_store_slot *sl = arg;
    bench_store_writer *w = sl->w;
    uint64_t now = bench_store_now_ns();
    pthread_mutex_lock(&w->mu);
    if (err != HSB_OK) {
        w->errors++;
    } else {
        bench_store_lat_add(&w->lat, now - sl->t0);
        w->ops++;
    }
    sl->busy = false;
    w->in_flight--;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *bench_store_writer_main(void *arg)
{
    bench_store_writer *w = arg;
    uint8_t blob[BENCH_STORE_BLOB];
    memset(blob, 0xab, sizeof(blob));
    pthread_mutex_lock(&w->mu);
    while (bench_store_now_ns() < w->until_ns) {
        while (w->in_flight == w->window) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        bench_store_slot *sl = NULL;
        for (int i = 0; i < w->window && sl == NULL; i++) {
            sl = w->slots[i].busy ? NULL : &w->slots[i];
        }
        sl->busy = true;
        sl->t0 = bench_store_now_ns();
        w->in_flight++;
        pthread_mutex_unlock(&w->mu);
        hsb_value v[2] = {
            /* One id sequence for all writers: rows append to the B-tree as in the reference. */
            {.type = HSB_VALUE_INT, .u.i = __atomic_add_fetch(w->next_id, 1, __ATOMIC_RELAXED)},
            {.type = HSB_VALUE_BLOB, .u.s = {blob, sizeof(blob)}},
        };
        hsb_stmt s = {"INSERT INTO bench_write(id, v) VALUES (?, ?)", v, 2};
        hsb_err err = store_write(w->st, &s, 1, 0, bench_store_write_done, sl);
        pthread_mutex_lock(&w->mu);
        if (err != HSB_OK) {
            w->errors++;
            sl->busy = false;
            w->in_flight--;
        }
    }
    while (w->in_flight > 0) { /* every write counted is acknowledged */
        pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

static int bench_store_group_writes(store *st, int writers, int window, double secs,
                                    int64_t *next_id, bench_store_result *res)
{
    bench_store_writer *w = calloc((size_t)writers, sizeof(*w));
    pthread_t *th = calloc((size_t)writers, sizeof(*th));
    uint64_t errors = 0;
    uint64_t t0 = bench_store_now_ns();
    uint64_t c0 = bench_store_cpu_ns();
    uint64_t wc0 = bench_store_thread_cpu_ns("hsb-store-w");

    for (int i = 0; i < writers; i++) {
        w[i].st = st;
        w[i].next_id = next_id;
        w[i].index = i;
        w[i].window = window;
        w[i].slots = calloc((size_t)window, sizeof(bench_store_slot));
        for (int k = 0; k < window; k++) {
            w[i].slots[k].w = &w[i];
        }
        w[i].until_ns = t0 + (uint64_t)(secs * 1e9);
        w[i].lat.cap = BENCH_STORE_SAMPLES / (size_t)writers;
        w[i].lat.v = malloc(w[i].lat.cap * sizeof(uint64_t));
        pthread_mutex_init(&w[i].mu, NULL);
        pthread_cond_init(&w[i].cv, NULL);
        pthread_create(&th[i], NULL, bench_store_writer_main, &w[i]);
    }
    for (int i = 0; i < writers; i++) {
        pthread_join(th[i], NULL);
        res->ops += w[i].ops;
        errors += w[i].errors;
        bench_store_lat_merge(&res->lat, &w[i].lat);
        free(w[i].lat.v);
        free(w[i].slots);
        pthread_cond_destroy(&w[i].cv);
        pthread_mutex_destroy(&w[i].mu);
    }
    res->secs += (double)(bench_store_now_ns() - t0) / 1e9;
    res->cpu_ns += bench_store_cpu_ns() - c0;
    res->writer_ns += bench_store_thread_cpu_ns("hsb-store-w") - wc0;
    free(w);
    free(th);
    if (errors > 0) {
        fprintf(stderr, "bench-store: %llu write errors\n", (unsigned long long)errors);
        return -1;
    }
    return 0;
}

/* ---- reference: plain sqlite3 ----------------------------------------------------------- */

static int bench_store_ref(const char *path, int per_txn, double secs, bench_store_result *res)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL, *begin = NULL, *commit = NULL;
    uint8_t blob[BENCH_STORE_BLOB];
    int rc = -1;

    memset(blob, 0xab, sizeof(blob));
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
                     "CREATE TABLE IF NOT EXISTS bench_write(id INTEGER PRIMARY KEY, v BLOB)",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO bench_write(id, v) VALUES (?, ?)", -1, &ins, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, "BEGIN", -1, &begin, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &commit, NULL) != SQLITE_OK) {
        fprintf(stderr, "bench-store: reference: %s\n", sqlite3_errmsg(db));
        goto out;
    }
    uint64_t t0 = bench_store_now_ns();
    uint64_t c0 = bench_store_cpu_ns();
    uint64_t until = t0 + (uint64_t)(secs * 1e9);
    while (bench_store_now_ns() < until) {
        uint64_t t1 = bench_store_now_ns();
        sqlite3_step(begin);
        sqlite3_reset(begin);
        for (int i = 0; i < per_txn; i++) {
            sqlite3_bind_null(ins, 1); /* the next rowid: rows append, as with ours */
            sqlite3_bind_blob(ins, 2, blob, sizeof(blob), SQLITE_STATIC);
            if (sqlite3_step(ins) != SQLITE_DONE) {
                fprintf(stderr, "bench-store: reference insert: %s\n", sqlite3_errmsg(db));
                goto out;
            }
            sqlite3_reset(ins);
        }
        if (sqlite3_step(commit) != SQLITE_DONE) {
            fprintf(stderr, "bench-store: reference commit: %s\n", sqlite3_errmsg(db));
            goto out;
        }
        sqlite3_reset(commit);
        bench_store_lat_add(&res->lat, bench_store_now_ns() - t1);
        res->ops += (uint64_t)per_txn;
    }
    res->secs += (double)(bench_store_now_ns() - t0) / 1e9;
    res->cpu_ns += bench_store_cpu_ns() - c0;
    rc = 0;
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(begin);
    sqlite3_finalize(commit);
    sqlite3_close(db);
    return rc;
}

/* ---- setup and main --------------------------------------------------------------------- */

static void bench_store_done_count(void *arg, hsb_err err)
{
    if (err != HSB_OK) {
        __atomic_add_fetch((int *)arg, 1, __ATOMIC_RELAXED);
    }
}

static int bench_store_fill(store *st)
{
    uint8_t blob[BENCH_STORE_BLOB];
    int failed = 0;
    hsb_stmt create = {"CREATE TABLE bench_read(id INTEGER PRIMARY KEY, v BLOB)", NULL, 0};
    hsb_stmt create_w = {"CREATE TABLE bench_write(id INTEGER PRIMARY KEY, v BLOB)", NULL, 0};

    memset(blob, 0xcd, sizeof(blob));
    if (store_write(st, &create, 1, 0, bench_store_done_count, &failed) != HSB_OK ||
        store_write(st, &create_w, 1, 0, bench_store_done_count, &failed) != HSB_OK) {
        return -1;
    }
    for (int64_t i = 1; i <= BENCH_STORE_ROWS; i++) {
        hsb_value v[2] = {{.type = HSB_VALUE_INT, .u.i = i},
                          {.type = HSB_VALUE_BLOB, .u.s = {blob, sizeof(blob)}}};
        hsb_stmt s = {"INSERT INTO bench_read(id, v) VALUES (?, ?)", v, 2};
        if (store_write(st, &s, 1, 0, bench_store_done_count, &failed) != HSB_OK) {
            return -1;
        }
    }
    store_sync(st);
    return failed == 0 ? 0 : -1;
}

static void bench_store_unlink(const char *path)
{
    char p[512];
    const char *sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
        unlink(p);
    }
}

static void bench_store_usage(void)
{
    fprintf(stderr, "usage: bench-store [--short] [--dir DIR] [--seconds S] [--writers N] "
                    "[--window W] [--writes-only]\n");
}

int main(int argc, char **argv)
{
    bench_store_opts o = {.seconds = 3.0, .writers = 64, .window = 8};
    char tmpl[300], path[400], ref1[400], ref100[400], refw[400];
    bench_store_result rd_unc, rd_c, warm, wr, wp, r1, r100, rw;
    char wp_name[48];
    char rw_name[48];
    int64_t next_id = 0;
    int rounds;
    store *st = NULL;
    store_config cfg;
    store_stats ss;
    int rc = 1;

    snprintf(o.dir, sizeof(o.dir), ".");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--short") == 0) {
            o.short_run = true;
        } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
            snprintf(o.dir, sizeof(o.dir), "%s", argv[++i]);
        } else if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
            o.seconds = atof(argv[++i]);
        } else if (strcmp(argv[i], "--writes-only") == 0) {
            o.writes_only = true;
        } else if (strcmp(argv[i], "--writers") == 0 && i + 1 < argc) {
            o.writers = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc) {
            o.window = atoi(argv[++i]);
        } else {
            bench_store_usage();
            return 2;
        }
    }
    if (o.short_run) {
        o.seconds = 0.2;
    }
    /* The disk's fsync time drifts (other work on the machine): every workload runs in several
     * interleaved rounds, so each sees the same conditions on average. */
    rounds = o.short_run ? 1 : 5;
    snprintf(rw_name, sizeof(rw_name), "sqlite3 %d rows/txn (bound)", o.writers);
    snprintf(wp_name, sizeof(wp_name), "write pipelined (%d each)", o.window);
    if (o.seconds <= 0 || o.writers < 1 || o.window < 1) {
        bench_store_usage();
        return 2;
    }
    snprintf(tmpl, sizeof(tmpl), "%s/bench-store-XXXXXX", o.dir);
    if (mkdtemp(tmpl) == NULL) {
        perror("bench-store: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/store.db", tmpl);
    snprintf(ref1, sizeof(ref1), "%s/ref1.db", tmpl);
    snprintf(ref100, sizeof(ref100), "%s/ref100.db", tmpl);
    snprintf(refw, sizeof(refw), "%s/refw.db", tmpl);

    store_config_defaults(&cfg);
    cfg.path = path;
    cfg.sync = STORE_SYNC_FULL;
    cfg.readers = BENCH_STORE_READERS;
    if (store_open(&cfg, &st) != HSB_OK || bench_store_fill(st) != 0) {
        fprintf(stderr, "bench-store: cannot set up %s\n", path);
        goto out;
    }

    bench_store_result_init(&rd_unc, "read uncached");
    bench_store_result_init(&rd_c, "read cached");
    bench_store_result_init(&warm, "warm-up");
    bench_store_result_init(&wr, "write group commit");
    bench_store_result_init(&wp, wp_name);
    bench_store_result_init(&r1, "sqlite3 1 row/txn");
    bench_store_result_init(&r100, "sqlite3 100 rows/txn");
    bench_store_result_init(&rw, rw_name);
    double slice = o.seconds / rounds;
    if (!o.writes_only && bench_store_reads(st, 0, slice / 2, &warm) != 0) {
        goto out;
    }
    for (int r = 0; r < rounds && !o.writes_only; r++) {
        if (bench_store_reads(st, STORE_QUERY_NOCACHE, slice, &rd_unc) != 0 ||
            bench_store_reads(st, 0, slice, &rd_c) != 0) {
            goto out;
        }
    }
    store_pool_stats before;
    store_pool_stats_get(store_pool_of(st), &before);
    for (int r = 0; r < rounds; r++) {
        if (bench_store_group_writes(st, o.writers, 1, slice, &next_id, &wr) != 0 ||
            bench_store_group_writes(st, o.writers, o.window, slice, &next_id, &wp) != 0 ||
            bench_store_ref(ref1, 1, slice, &r1) != 0 ||
            bench_store_ref(ref100, 100, slice, &r100) != 0 ||
            bench_store_ref(refw, o.writers, slice, &rw) != 0) {
            goto out;
        }
    }
    store_stats_get(st, &ss);
    bench_store_result *fin[] = {&rd_unc, &rd_c, &warm, &wr, &wp, &r1, &r100, &rw};
    for (size_t i = 0; i < 8; i++) {
        bench_store_result_finish(fin[i]);
    }

    double groups = (double)(ss.pool.groups - before.groups);
    double commit_us =
        groups > 0 ? (double)(ss.pool.commit_ns - before.commit_ns) / groups / 1e3 : 0;
    double run_us = groups > 0 ? (double)(ss.pool.run_ns - before.run_ns) / groups / 1e3 : 0;
    double done_us = groups > 0 ? (double)(ss.pool.done_ns - before.done_ns) / groups / 1e3 : 0;
    double avg_group = groups > 0 ? (double)(ss.pool.jobs - before.jobs) / groups : 0.0;
    double cached_ratio =
        bench_store_rate(&rd_unc) > 0 ? bench_store_rate(&rd_c) / bench_store_rate(&rd_unc) : 0.0;
    double vs1 = bench_store_rate(&r1) > 0 ? bench_store_rate(&wr) / bench_store_rate(&r1) : 0;
    double vsw = bench_store_rate(&rw) > 0 ? bench_store_rate(&wr) / bench_store_rate(&rw) : 0;
    double vs100 =
        bench_store_rate(&r100) > 0 ? bench_store_rate(&wr) / bench_store_rate(&r100) : 0;
    double wp_vs100 =
        bench_store_rate(&r100) > 0 ? bench_store_rate(&wp) / bench_store_rate(&r100) : 0;

    printf("bench-store (%s, %.2f s per workload in %d interleaved rounds, %d readers, %d writers, "
           "synchronous=FULL, WAL)\n",
           o.short_run ? "short" : "full", o.seconds, rounds, BENCH_STORE_READERS, o.writers);
    printf("%-26s %14s %10s %10s %10s\n", "workload", "ops/s", "p50 us", "p99 us", "CPU us/op");
    const bench_store_result *all[] = {&rd_unc, &rd_c, &wr, &wp, &r1, &r100, &rw};
    for (size_t i = 0; i < 7; i++) {
        printf("%-26s %14.0f %10.1f %10.1f %10.2f\n", all[i]->name, bench_store_rate(all[i]),
               all[i]->p50_us, all[i]->p99_us, bench_store_cpu_us(all[i]));
    }
    printf("writer per group: run %.0f us, COMMIT %.0f us, completions %.0f us\n", run_us,
           commit_us, done_us);
    printf("writer thread CPU per row: %.2f us closed loop, %.2f us pipelined\n",
           bench_store_writer_us(&wr), bench_store_writer_us(&wp));
    printf("group commit vs sqlite3 at %d rows/txn (the most rows %d writers can put behind one "
           "fsync): %.2fx\n",
           o.writers, o.writers, vsw);
    printf("cached/uncached reads: %.2fx (goal >= 5x)\n", cached_ratio);
    printf("pipelined group commit (%d writers x %d writes in flight, each acknowledged after its "
           "COMMIT) vs 100 rows/txn: %.2fx\n",
           o.writers, o.window, wp_vs100);
    printf("group commit vs 1 row/txn: %.2fx, vs 100 rows/txn: %.2fx (goal >= 1x); "
           "avg group %.1f jobs, avg COMMIT %.0f us, cache hit rate %.3f\n",
           vs1, vs100, avg_group, commit_us, ss.cache.hit_rate);
    printf("{\"bench\":\"store\",\"short\":%s,\"seconds\":%.2f,\"writers\":%d,"
           "\"read_uncached_per_s\":%.0f,\"read_uncached_p50_us\":%.2f,"
           "\"read_uncached_p99_us\":%.2f,\"read_cached_per_s\":%.0f,\"read_cached_p50_us\":%.2f,"
           "\"read_cached_p99_us\":%.2f,\"cached_ratio\":%.2f,"
           "\"write_group_rows_per_s\":%.0f,\"write_group_p50_us\":%.1f,"
           "\"write_group_p99_us\":%.1f,\"avg_group\":%.1f,\"avg_commit_us\":%.0f,"
           "\"ref_1_rows_per_s\":%.0f,\"ref_100_rows_per_s\":%.0f,\"ref_writers_rows_per_s\":%.0f,"
           "\"ratio_vs_ref_1\":%.2f,\"ratio_vs_ref_100\":%.2f,\"ratio_vs_ref_writers\":%.2f,"
           "\"window\":%d,\"write_pipelined_rows_per_s\":%.0f,\"write_pipelined_p99_us\":%.1f,"
           "\"pipelined_ratio_vs_ref_100\":%.2f,\"write_group_cpu_us\":%.2f,"
           "\"write_pipelined_cpu_us\":%.2f,\"ref_100_cpu_us\":%.2f,"
           "\"write_group_writer_us\":%.2f,\"write_pipelined_writer_us\":%.2f}\n",
           o.short_run ? "true" : "false", o.seconds, o.writers, bench_store_rate(&rd_unc),
           rd_unc.p50_us, rd_unc.p99_us, bench_store_rate(&rd_c), rd_c.p50_us, rd_c.p99_us,
           cached_ratio, bench_store_rate(&wr), wr.p50_us, wr.p99_us, avg_group, commit_us,
           bench_store_rate(&r1), bench_store_rate(&r100), bench_store_rate(&rw), vs1, vs100, vsw,
           o.window, bench_store_rate(&wp), wp.p99_us, wp_vs100, bench_store_cpu_us(&wr),
           bench_store_cpu_us(&wp), bench_store_cpu_us(&r100), bench_store_writer_us(&wr),
           bench_store_writer_us(&wp));
    fflush(stdout);
    rc = 0;
out:
    if (st != NULL && store_close(st) != HSB_OK) {
        fprintf(stderr, "bench-store: store_close failed\n");
        rc = 1;
    }
    bench_store_unlink(path);
    bench_store_unlink(ref1);
    bench_store_unlink(ref100);
    bench_store_unlink(refw);
    rmdir(tmpl);
    return rc;
}
