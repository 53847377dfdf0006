/*
 * tests/unit/test_store_qcache.c - the query cache: keys, TTL (fake clock), LRU by bytes,
 * invalidation by table (write, explicit, flush), the generation check against the read/commit
 * race, and the multi-threaded proof that a cached result is never older than a commit that
 * completed before the query started. Also the agent query/write API and its policy.
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

#include "daemon/store/store.h"

#include "store_tmpdb.h"

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* ---- the cache alone -------------------------------------------------------------------- */

static store_qcache *qc_new(size_t max_bytes)
{
    store_qcache_config cfg = {
        .max_bytes = max_bytes, .default_ttl_ms = 1000, .clock_ms = fake_clock};
    store_qcache *qc = NULL;
    fake_now = 1000000;
    assert_int_equal(store_qcache_new(&cfg, &qc), HSB_OK);
    return qc;
}

/* Inserts a one-row result (value v, padded with pad bytes of text) for (sql, id). */
static bool qc_put(store_qcache *qc, const char *sql, int64_t id, const char *const *tables,
                   size_t n_tables, int64_t v, size_t pad, uint32_t ttl)
{
    store_qkey key;
    store_qsnap snap;
    store_qresult res;
    hsb_value param = {.type = HSB_VALUE_INT, .u.i = id};
    char *text = calloc(1, pad + 1);
    memset(text, 'x', pad);
    hsb_value cols[2] = {{.type = HSB_VALUE_INT, .u.i = v},
                         {.type = HSB_VALUE_TEXT, .u.s = {text, pad}}};

    assert_int_equal(store_qkey_init(&key, sql, &param, 1), HSB_OK);
    assert_int_equal(store_qcache_snapshot(qc, tables, n_tables, &snap), HSB_OK);
    store_qresult_init(&res, 1u << 20);
    store_qresult_add(&res, cols, 2);
    bool ok = store_qcache_insert(qc, &key, &snap, &res, ttl);
    store_qresult_fini(&res);
    store_qcache_snap_fini(&snap);
    store_qkey_fini(&key);
    free(text);
    return ok;
}

typedef struct got {
    int rows;
    int64_t v;
    char text[64];
} got;

static bool got_row(void *arg, const hsb_value *cols, size_t n)
{
    got *g = arg;
    g->rows++;
    g->v = cols[0].u.i;
    if (n > 1 && cols[1].type == HSB_VALUE_TEXT) {
        snprintf(g->text, sizeof(g->text), "%s", (const char *)cols[1].u.s.p);
    }
    return true;
}

/* Looks (sql, id) up: returns the cached value, or -1 on a miss. */
static int64_t qc_get(store_qcache *qc, const char *sql, int64_t id)
{
    store_qkey key;
    store_qentry *e;
    hsb_value param = {.type = HSB_VALUE_INT, .u.i = id};
    got g = {0};

    assert_int_equal(store_qkey_init(&key, sql, &param, 1), HSB_OK);
    hsb_err err = store_qcache_lookup(qc, &key, &e);
    store_qkey_fini(&key);
    if (err != HSB_OK) {
        return -1;
    }
    assert_int_equal(store_qcache_replay(e, got_row, &g), HSB_OK);
    store_qcache_release(qc, e);
    assert_int_equal(g.rows, 1);
    return g.v;
}

static const char *const TA[] = {"a"};
static const char *const TB[] = {"b"};
static const char *const TAB[] = {"a", "b"};
#define Q "SELECT v FROM a WHERE id = ?"

static void test_hit_miss_keys(void **state)
{
    (void)state;
    store_qcache *qc = qc_new(1u << 20);
    store_qcache_stats st;

    assert_int_equal(qc_get(qc, Q, 1), -1);
    assert_true(qc_put(qc, Q, 1, TA, 1, 42, 3, 0));
    assert_int_equal(qc_get(qc, Q, 1), 42);
    assert_int_equal(qc_get(qc, Q, 2), -1);                               /* other parameter */
    assert_int_equal(qc_get(qc, "SELECT v FROM a WHERE id = ? ", 1), -1); /* other text */

    /* Same bytes, different type: an INT 1 and a TEXT "1" are different keys. */
    store_qkey k1, k2;
    hsb_value i1 = {.type = HSB_VALUE_INT, .u.i = 0x31};
    hsb_value t1 = {.type = HSB_VALUE_TEXT, .u.s = {"1", 1}};
    assert_int_equal(store_qkey_init(&k1, Q, &i1, 1), HSB_OK);
    assert_int_equal(store_qkey_init(&k2, Q, &t1, 1), HSB_OK);
    assert_true(k1.len != k2.len || memcmp(k1.buf, k2.buf, k1.len) != 0);
    store_qkey_fini(&k1);
    store_qkey_fini(&k2);

    /* Replacing an entry keeps one. */
    assert_true(qc_put(qc, Q, 1, TA, 1, 43, 3, 0));
    assert_int_equal(qc_get(qc, Q, 1), 43);
    store_qcache_stats_get(qc, &st);
    assert_int_equal(st.entries, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 3);
    assert_true(st.hit_rate > 0.39 && st.hit_rate < 0.41);
    store_qcache_free(qc);
}

static void test_ttl(void **state)
{
    (void)state;
    store_qcache *qc = qc_new(1u << 20);
    store_qcache_stats st;

    assert_true(qc_put(qc, Q, 1, TA, 1, 7, 0, 100));
    assert_true(qc_put(qc, Q, 2, TA, 1, 8, 0, 0)); /* default TTL: 1000 */
    fake_now += 99;
    assert_int_equal(qc_get(qc, Q, 1), 7);
    fake_now += 1;
    assert_int_equal(qc_get(qc, Q, 1), -1);
    assert_int_equal(qc_get(qc, Q, 2), 8);
    fake_now += 900;
    assert_int_equal(qc_get(qc, Q, 2), -1);
    store_qcache_stats_get(qc, &st);
    assert_int_equal(st.expirations, 2);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    store_qcache_free(qc);
}

static void test_lru_by_bytes(void **state)
{
    (void)state;
    store_qcache *qc = qc_new(64 * 1024);
    store_qcache_stats st;

    /* Entries of about 4 KiB: 64 KiB holds about 15. */
    for (int i = 0; i < 40; i++) {
        assert_true(qc_put(qc, Q, i, TA, 1, i, 4000, 0));
        assert_int_equal(qc_get(qc, Q, 0), 0); /* keep entry 0 hot */
    }
    store_qcache_stats_get(qc, &st);
    assert_true(st.bytes <= 64 * 1024);
    assert_true(st.evictions >= 20);
    assert_true(st.entries >= 10 && st.entries <= 16);
    assert_int_equal(qc_get(qc, Q, 0), 0);  /* recently used: kept */
    assert_int_equal(qc_get(qc, Q, 1), -1); /* least recently used: evicted */
    assert_int_equal(qc_get(qc, Q, 39), 39);
    /* Larger than an eighth of the bound: not cached. */
    assert_false(qc_put(qc, Q, 100, TA, 1, 1, 9000, 0));
    store_qcache_stats_get(qc, &st);
    assert_int_equal(st.too_big, 1);
    store_qcache_free(qc);
}

static void test_invalidation(void **state)
{
    (void)state;
    store_qcache *qc = qc_new(1u << 20);
    store_qcache_stats st;

    assert_true(qc_put(qc, Q, 1, TA, 1, 1, 0, 0));
    assert_true(qc_put(qc, Q, 2, TB, 1, 2, 0, 0));
    assert_true(qc_put(qc, Q, 3, TAB, 2, 3, 0, 0));
    store_qcache_invalidate(qc, "a");
    assert_int_equal(qc_get(qc, Q, 1), -1);
    assert_int_equal(qc_get(qc, Q, 2), 2);
    assert_int_equal(qc_get(qc, Q, 3), -1);
    store_qcache_invalidate(qc, "nosuch");

    /* A write bracket on b drops b's entries. */
    assert_true(qc_put(qc, Q, 3, TAB, 2, 3, 0, 0));
    store_qcache_write_begin(qc, TB, 1, false);
    assert_int_equal(qc_get(qc, Q, 2), -1);
    assert_int_equal(qc_get(qc, Q, 3), -1);
    store_qcache_write_end(qc, TB, 1, false);

    assert_true(qc_put(qc, Q, 1, TA, 1, 1, 0, 0));
    assert_true(qc_put(qc, Q, 2, TB, 1, 2, 0, 0));
    store_qcache_flush(qc);
    assert_int_equal(qc_get(qc, Q, 1), -1);
    assert_int_equal(qc_get(qc, Q, 2), -1);
    /* A schema change (all) drops everything as well. */
    assert_true(qc_put(qc, Q, 1, TA, 1, 1, 0, 0));
    store_qcache_write_begin(qc, NULL, 0, true);
    store_qcache_write_end(qc, NULL, 0, true);
    assert_int_equal(qc_get(qc, Q, 1), -1);
    store_qcache_stats_get(qc, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.flushes, 1);
    assert_true(st.invalidations >= 7);
    store_qcache_free(qc);
}

/* The race: a reader snapshots generations (T0), a writer commits and invalidates (T1), the
 * reader inserts its possibly stale result (T2): refused. */
static void test_generation_check(void **state)
{
    (void)state;
    store_qcache *qc = qc_new(1u << 20);
    store_qkey key;
    store_qsnap snap;
    store_qresult res;
    store_qcache_stats st;
    hsb_value param = {.type = HSB_VALUE_INT, .u.i = 1};
    hsb_value col = {.type = HSB_VALUE_INT, .u.i = 5};

    assert_int_equal(store_qkey_init(&key, Q, &param, 1), HSB_OK);

    /* 1. commit between snapshot and insert */
    assert_int_equal(store_qcache_snapshot(qc, TA, 1, &snap), HSB_OK);
    store_qcache_write_begin(qc, TA, 1, false);
    store_qcache_write_end(qc, TA, 1, false);
    store_qresult_init(&res, 1024);
    store_qresult_add(&res, &col, 1);
    assert_false(store_qcache_insert(qc, &key, &snap, &res, 0));
    store_qcache_snap_fini(&snap);

    /* 2. snapshot while a commit is in progress, insert after it */
    store_qcache_write_begin(qc, TA, 1, false);
    assert_int_equal(store_qcache_snapshot(qc, TA, 1, &snap), HSB_OK);
    store_qresult_init(&res, 1024);
    store_qresult_add(&res, &col, 1);
    assert_false(store_qcache_insert(qc, &key, &snap, &res, 0)); /* still writing */
    store_qresult_init(&res, 1024);
    store_qresult_add(&res, &col, 1);
    store_qcache_write_end(qc, TA, 1, false);
    assert_false(store_qcache_insert(qc, &key, &snap, &res, 0)); /* generation moved */
    store_qcache_snap_fini(&snap);

    /* 3. explicit invalidation and flush between snapshot and insert */
    assert_int_equal(store_qcache_snapshot(qc, TA, 1, &snap), HSB_OK);
    store_qcache_invalidate(qc, "a");
    store_qresult_init(&res, 1024);
    store_qresult_add(&res, &col, 1);
    assert_false(store_qcache_insert(qc, &key, &snap, &res, 0));
    store_qcache_snap_fini(&snap);
    assert_int_equal(store_qcache_snapshot(qc, TA, 1, &snap), HSB_OK);
    store_qcache_flush(qc);
    store_qresult_init(&res, 1024);
    store_qresult_add(&res, &col, 1);
    assert_false(store_qcache_insert(qc, &key, &snap, &res, 0));
    store_qcache_snap_fini(&snap);

    /* 4. a write to another table does not matter */
    assert_int_equal(store_qcache_snapshot(qc, TA, 1, &snap), HSB_OK);
    store_qcache_write_begin(qc, TB, 1, false);
    store_qcache_write_end(qc, TB, 1, false);
    store_qresult_init(&res, 1024);
    store_qresult_add(&res, &col, 1);
    assert_true(store_qcache_insert(qc, &key, &snap, &res, 0));
    store_qcache_snap_fini(&snap);

    store_qcache_stats_get(qc, &st);
    assert_int_equal(st.stale_refused, 5);
    assert_int_equal(st.inserts, 1);
    store_qkey_fini(&key);
    store_qcache_free(qc);
}

/* ---- through the store ------------------------------------------------------------------ */

typedef struct fixture {
    store_tmpdb db;
    store *st;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    store_config cfg;
    if (store_tmpdb_make(&f->db, "qcache") != 0) {
        return -1;
    }
    store_config_defaults(&cfg);
    cfg.path = f->db.path;
    cfg.sync = STORE_SYNC_NORMAL;
    cfg.readers = 4;
    if (store_open(&cfg, &f->st) != HSB_OK) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_close(f->st), HSB_OK);
    store_tmpdb_remove(&f->db);
    free(f);
    return 0;
}

static void record_err(void *arg, hsb_err err)
{
    *(hsb_err *)arg = err;
}

static hsb_err write_sync(store *st, const char *sql, unsigned flags)
{
    hsb_err done = HSB_EINTERNAL;
    hsb_stmt s = {.sql = sql};
    hsb_err err = store_write(st, &s, 1, flags, record_err, &done);
    if (err != HSB_OK) {
        return err;
    }
    assert_int_equal(store_sync(st), HSB_OK);
    return done;
}

static int64_t query_v(store *st, const char *sql, int64_t id)
{
    got g = {.v = -1};
    hsb_value p = {.type = HSB_VALUE_INT, .u.i = id};
    assert_int_equal(store_query(st, sql, &p, 1, 0, 0, got_row, &g), HSB_OK);
    return g.v;
}

static void test_store_cache_invalidated_by_write(void **state)
{
    fixture *f = *state;
    store_qcache_stats a, b;
    const char *q = "SELECT v, name FROM agent_t WHERE id = ?";

    assert_int_equal(write_sync(f->st,
                                "CREATE TABLE agent_t(id INTEGER PRIMARY KEY, v INTEGER, "
                                "name TEXT)",
                                STORE_QUERY_AGENT),
                     HSB_OK);
    assert_int_equal(
        write_sync(f->st, "CREATE TABLE agent_u(id INTEGER PRIMARY KEY)", STORE_QUERY_AGENT),
        HSB_OK);
    assert_int_equal(write_sync(f->st, "INSERT INTO agent_t VALUES (1, 10, 'ten')", 0), HSB_OK);
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    assert_int_equal(query_v(f->st, q, 1), 10);
    assert_int_equal(query_v(f->st, q, 1), 10);
    store_qcache_stats_get(store_qcache_of(f->st), &b);
    assert_int_equal(b.misses - a.misses, 1);
    assert_int_equal(b.hits - a.hits, 1);

    /* A write to another table leaves the entry alone. */
    assert_int_equal(write_sync(f->st, "INSERT INTO agent_u VALUES (1)", 0), HSB_OK);
    assert_int_equal(query_v(f->st, q, 1), 10);
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    assert_int_equal(a.hits - b.hits, 1);

    /* A committed write to agent_t invalidates it: the next query sees the new value. */
    assert_int_equal(write_sync(f->st, "UPDATE agent_t SET v = 11 WHERE id = 1", 0), HSB_OK);
    assert_int_equal(query_v(f->st, q, 1), 11);
    store_qcache_stats_get(store_qcache_of(f->st), &b);
    assert_int_equal(b.misses - a.misses, 1);
    assert_true(b.invalidations > a.invalidations);

    /* Explicit invalidation and flush. */
    assert_int_equal(query_v(f->st, q, 1), 11);
    store_cache_invalidate(f->st, "agent_t");
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    assert_int_equal(query_v(f->st, q, 1), 11);
    store_qcache_stats_get(store_qcache_of(f->st), &b);
    assert_int_equal(b.misses - a.misses, 1);
    store_cache_flush(f->st);
    assert_int_equal(query_v(f->st, q, 1), 11);
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    assert_int_equal(a.misses - b.misses, 1);

    /* A failed write (rolled back) still leaves the cache consistent. */
    assert_int_equal(write_sync(f->st, "INSERT INTO agent_t VALUES (1, 99, 'dup')", 0), HSB_EIO);
    assert_int_equal(query_v(f->st, q, 1), 11);

    /* A schema change flushes everything. */
    assert_int_equal(query_v(f->st, q, 1), 11);
    assert_int_equal(write_sync(f->st, "CREATE TABLE agent_w(x)", STORE_QUERY_AGENT), HSB_OK);
    store_qcache_stats_get(store_qcache_of(f->st), &b);
    assert_int_equal(b.entries, 0);
}

static bool stop_first(void *arg, const hsb_value *cols, size_t n)
{
    (*(int *)arg)++;
    return false;
}

static void test_store_cache_early_stop_not_cached(void **state)
{
    fixture *f = *state;
    store_qcache_stats a, b;
    int rows = 0;

    assert_int_equal(write_sync(f->st, "CREATE TABLE agent_s(x)", 0), HSB_OK);
    assert_int_equal(write_sync(f->st, "INSERT INTO agent_s VALUES (1), (2), (3)", 0), HSB_OK);
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    assert_int_equal(store_query(f->st, "SELECT x FROM agent_s", NULL, 0, 0, 0, stop_first, &rows),
                     HSB_OK);
    assert_int_equal(rows, 1);
    store_qcache_stats_get(store_qcache_of(f->st), &b);
    assert_int_equal(b.inserts, a.inserts);
    /* NOCACHE neither reads nor fills the cache. */
    got g = {0};
    assert_int_equal(
        store_query(f->st, "SELECT x FROM agent_s", NULL, 0, 0, STORE_QUERY_NOCACHE, got_row, &g),
        HSB_OK);
    assert_int_equal(g.rows, 3);
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    assert_int_equal(a.inserts, b.inserts);
    assert_int_equal(a.misses, b.misses);
}

static void test_agent_policy(void **state)
{
    fixture *f = *state;
    got g = {0};
    hsb_err done = HSB_EINTERNAL;

    /* A result cached by the daemon is not served to an agent: the policy still applies. */
    assert_int_equal(store_query(f->st, "SELECT count(*) FROM durable", NULL, 0, 0, 0, got_row, &g),
                     HSB_OK);

    /* Reads: kv, agent_* and audit only; nothing that writes. */
    assert_int_equal(
        store_agent_query(f->st, "SELECT count(*) FROM durable", NULL, 0, 0, got_row, &g),
        HSB_EDENIED);
    assert_int_equal(
        store_agent_query(f->st, "SELECT count(*) FROM dead_letters", NULL, 0, 0, got_row, &g),
        HSB_EDENIED);
    assert_int_equal(
        store_agent_query(f->st, "SELECT name FROM sqlite_master", NULL, 0, 0, got_row, &g),
        HSB_EDENIED);
    assert_int_equal(
        store_agent_query(f->st, "SELECT count(*) FROM audit", NULL, 0, 0, got_row, &g), HSB_OK);
    assert_int_equal(store_agent_query(f->st, "INSERT INTO kv(ns, key) VALUES ('a', 'b')", NULL, 0,
                                       0, got_row, &g),
                     HSB_EINVAL);
    assert_int_equal(store_agent_query(f->st, "SELECT ?", NULL, 0, 0, got_row, &g), HSB_EINVAL);
    assert_int_equal(store_agent_query(f->st, "SELECT nosuch FROM kv", NULL, 0, 0, got_row, &g),
                     HSB_EIO);

    /* Writes: kv and agent_* only. */
    assert_int_equal(write_sync(f->st, "DELETE FROM durable", STORE_QUERY_AGENT), HSB_EDENIED);
    assert_int_equal(write_sync(f->st,
                                "INSERT INTO audit(seq, ts, event, detail, prev_hash, "
                                "hash) VALUES (100, 0, 'x', 'y', x'00', x'00')",
                                STORE_QUERY_AGENT),
                     HSB_EDENIED);
    assert_int_equal(write_sync(f->st, "DROP TRIGGER audit_no_update", STORE_QUERY_AGENT),
                     HSB_EDENIED);
    assert_int_equal(write_sync(f->st, "PRAGMA user_version=5", STORE_QUERY_AGENT), HSB_EDENIED);
    assert_int_equal(
        write_sync(f->st, "CREATE TABLE agent_p(k TEXT PRIMARY KEY, v)", STORE_QUERY_AGENT),
        HSB_OK);

    /* A transaction commits together or not at all. */
    hsb_value k = {.type = HSB_VALUE_TEXT, .u.s = {"k1", 2}};
    hsb_value v = {.type = HSB_VALUE_BLOB, .u.s = {"\x01\x02", 2}};
    hsb_value kv2[2] = {k, v};
    hsb_stmt txn[2] = {{"INSERT INTO agent_p(k, v) VALUES ('k0', 0)", NULL, 0},
                       {"INSERT INTO agent_p(k, v) VALUES (?, ?)", kv2, 2}};
    assert_int_equal(store_agent_txn(f->st, txn, 2, record_err, &done), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(done, HSB_OK);
    hsb_stmt bad[2] = {{"INSERT INTO agent_p(k, v) VALUES ('k2', 2)", NULL, 0},
                       {"INSERT INTO agent_p(k, v) VALUES ('k1', 1)", NULL, 0}}; /* duplicate */
    assert_int_equal(store_agent_txn(f->st, bad, 2, record_err, &done), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(done, HSB_EIO);
    memset(&g, 0, sizeof(g));
    assert_int_equal(
        store_agent_query(f->st, "SELECT count(*) FROM agent_p", NULL, 0, 0, got_row, &g), HSB_OK);
    assert_int_equal(g.v, 2);
    hsb_stmt one = {"INSERT INTO kv(ns, key, value) VALUES ('consent', 'p1', 'yes')", NULL, 0};
    assert_int_equal(store_agent_write(f->st, &one, record_err, &done), HSB_OK);
    assert_int_equal(store_agent_audit(f->st, "consent.granted", "subject=p1"), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(done, HSB_OK);
    memset(&g, 0, sizeof(g));
    hsb_value ns = {.type = HSB_VALUE_TEXT, .u.s = {"consent", 7}};
    assert_int_equal(store_agent_query(f->st, "SELECT count(*), value FROM kv WHERE ns = ?", &ns, 1,
                                       0, got_row, &g),
                     HSB_OK);
    assert_int_equal(g.v, 1);
    assert_string_equal(g.text, "yes");
    assert_true(store_agent_table_allowed("agent_x", true));
    assert_false(store_agent_table_allowed("audit", true));
    assert_true(store_agent_table_allowed("audit", false));
}

/* ---- the staleness proof ---------------------------------------------------------------- */

#define STALE_WRITERS 3
#define STALE_READERS 4
#define STALE_MS      1500

typedef struct stale_ctx {
    store *st;
    int64_t committed; /* atomic: the highest value whose write completed (after COMMIT) */
    int64_t next;      /* atomic: values handed to writers */
    int stop;          /* atomic */
    uint64_t reads, stale, errors;
} stale_ctx;

typedef struct stale_write {
    stale_ctx *ctx;
    int64_t v;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} stale_write;

static void stale_write_done(void *arg, hsb_err err)
{
    stale_write *w = arg;
    if (err == HSB_OK) {
        int64_t cur = __atomic_load_n(&w->ctx->committed, __ATOMIC_SEQ_CST);
        while (cur < w->v && !__atomic_compare_exchange_n(&w->ctx->committed, &cur, w->v, false,
                                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
        }
    } else {
        __atomic_add_fetch(&w->ctx->errors, 1, __ATOMIC_SEQ_CST);
    }
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void *stale_writer(void *arg)
{
    stale_ctx *ctx = arg;
    stale_write w = {.ctx = ctx};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    while (!__atomic_load_n(&ctx->stop, __ATOMIC_SEQ_CST)) {
        w.v = __atomic_add_fetch(&ctx->next, 1, __ATOMIC_SEQ_CST);
        w.done = false;
        hsb_value p = {.type = HSB_VALUE_INT, .u.i = w.v};
        hsb_stmt s = {"UPDATE agent_counter SET v = max(v, ?) WHERE id = 1", &p, 1};
        if (store_write(ctx->st, &s, 1, 0, stale_write_done, &w) != HSB_OK) {
            __atomic_add_fetch(&ctx->errors, 1, __ATOMIC_SEQ_CST);
            break;
        }
        pthread_mutex_lock(&w.mu);
        while (!w.done) {
            pthread_cond_wait(&w.cv, &w.mu);
        }
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return NULL;
}

static void *stale_reader(void *arg)
{
    stale_ctx *ctx = arg;
    while (!__atomic_load_n(&ctx->stop, __ATOMIC_SEQ_CST)) {
        int64_t before = __atomic_load_n(&ctx->committed, __ATOMIC_SEQ_CST);
        got g = {.v = -1};
        hsb_value id = {.type = HSB_VALUE_INT, .u.i = 1};
        if (store_query(ctx->st, "SELECT v FROM agent_counter WHERE id = ?", &id, 1, 0, 0, got_row,
                        &g) != HSB_OK) {
            __atomic_add_fetch(&ctx->errors, 1, __ATOMIC_SEQ_CST);
            continue;
        }
        __atomic_add_fetch(&ctx->reads, 1, __ATOMIC_SEQ_CST);
        if (g.v < before) {
            __atomic_add_fetch(&ctx->stale, 1, __ATOMIC_SEQ_CST);
        }
    }
    return NULL;
}

static void test_never_stale_multithreaded(void **state)
{
    fixture *f = *state;
    stale_ctx ctx = {.st = f->st};
    pthread_t w[STALE_WRITERS], r[STALE_READERS];
    store_qcache_stats a, b;

    assert_int_equal(write_sync(f->st,
                                "CREATE TABLE agent_counter(id INTEGER PRIMARY KEY, v "
                                "INTEGER NOT NULL)",
                                0),
                     HSB_OK);
    assert_int_equal(write_sync(f->st, "INSERT INTO agent_counter VALUES (1, 0)", 0), HSB_OK);
    store_qcache_stats_get(store_qcache_of(f->st), &a);
    for (int i = 0; i < STALE_READERS; i++) {
        pthread_create(&r[i], NULL, stale_reader, &ctx);
    }
    for (int i = 0; i < STALE_WRITERS; i++) {
        pthread_create(&w[i], NULL, stale_writer, &ctx);
    }
    /* At least STALE_MS and 50 commits (valgrind serializes threads), at most 30 s. */
    for (int waited = 0; waited < 30000; waited += 50) {
        if (waited >= STALE_MS && __atomic_load_n(&ctx.committed, __ATOMIC_SEQ_CST) >= 50) {
            break;
        }
        usleep(50 * 1000);
    }
    __atomic_store_n(&ctx.stop, 1, __ATOMIC_SEQ_CST);
    for (int i = 0; i < STALE_WRITERS; i++) {
        pthread_join(w[i], NULL);
    }
    for (int i = 0; i < STALE_READERS; i++) {
        pthread_join(r[i], NULL);
    }
    store_qcache_stats_get(store_qcache_of(f->st), &b);
    print_message("staleness: %llu reads, %lld commits, %llu hits, %llu misses, %llu refused\n",
                  (unsigned long long)ctx.reads, (long long)ctx.committed,
                  (unsigned long long)(b.hits - a.hits), (unsigned long long)(b.misses - a.misses),
                  (unsigned long long)(b.stale_refused - a.stale_refused));
    assert_int_equal(ctx.errors, 0);
    assert_int_equal(ctx.stale, 0);
    assert_true(ctx.committed >= 50);
    assert_true(ctx.reads > 100);
    assert_true(b.hits > a.hits); /* the cache was really in play */
    assert_true(b.invalidations > a.invalidations);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_miss_keys),
        cmocka_unit_test(test_ttl),
        cmocka_unit_test(test_lru_by_bytes),
        cmocka_unit_test(test_invalidation),
        cmocka_unit_test(test_generation_check),
        cmocka_unit_test_setup_teardown(test_store_cache_invalidated_by_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_store_cache_early_stop_not_cached, setup, teardown),
        cmocka_unit_test_setup_teardown(test_agent_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_never_stale_multithreaded, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
