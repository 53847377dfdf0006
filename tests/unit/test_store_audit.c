/*
 * tests/unit/test_store_audit.c - the hash-chained audit trail: appends from many threads form
 * one chain, the chain continues across a reopen, the triggers refuse UPDATE and DELETE, and
 * tampering (after dropping a trigger through a raw connection) is found at the right seq.
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

#include <sodium.h>

#include "daemon/store/store.h"

#include "store_tmpdb.h"

typedef struct fixture {
    store_tmpdb db;
    store *st;
} fixture;

static uint64_t fake_wall(void *arg)
{
    (void)arg;
    return 1700000000123ull;
}

static store *fixture_open(fixture *f)
{
    store_config cfg;
    store *st = NULL;
    store_config_defaults(&cfg);
    cfg.path = f->db.path;
    cfg.wall_ms = fake_wall;
    assert_int_equal(store_open(&cfg, &st), HSB_OK);
    return st;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (store_tmpdb_make(&f->db, "audit") != 0) {
        return -1;
    }
    f->st = fixture_open(f);
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

#define AUDIT_THREADS 4
#define AUDIT_EACH    50

static void *appender(void *arg)
{
    store *st = arg;
    char detail[64];
    for (int i = 0; i < AUDIT_EACH; i++) {
        snprintf(detail, sizeof(detail), "agent=echo from=closed to=open n=%d", i);
        assert_int_equal(store_audit_append(st, "breaker", detail, 0, NULL, NULL), HSB_OK);
    }
    return NULL;
}

static void test_chain_append_verify(void **state)
{
    fixture *f = *state;
    store_audit_report rep;
    pthread_t th[AUDIT_THREADS];
    store_stats ss;

    /* Empty chain verifies. */
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.rows, 0);

    for (int i = 0; i < AUDIT_THREADS; i++) {
        pthread_create(&th[i], NULL, appender, f->st);
    }
    for (int i = 0; i < AUDIT_THREADS; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.rows, AUDIT_THREADS * AUDIT_EACH);
    assert_int_equal(rep.last_seq, AUDIT_THREADS * AUDIT_EACH);
    store_stats_get(f->st, &ss);
    assert_int_equal(ss.audit_seq, AUDIT_THREADS * AUDIT_EACH);

    /* The chain continues across a reopen. */
    assert_int_equal(store_close(f->st), HSB_OK);
    f->st = fixture_open(f);
    assert_int_equal(store_audit_append(f->st, "dead_letter", "agent=x id=9", 0, NULL, NULL),
                     HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.last_seq, AUDIT_THREADS * AUDIT_EACH + 1);
    assert_int_equal(store_audit_append(f->st, NULL, "x", 0, NULL, NULL), HSB_EINVAL);
}

static void test_hash_definition(void **state)
{
    (void)state;
    /* The documented encoding: prev || be64 seq || be64 ts || be32 len || event || be32 len ||
     * detail. */
    uint8_t prev[32] = {0}, a[32], b[32];
    uint8_t buf[32 + 8 + 8 + 4 + 3 + 4 + 3];
    size_t o = 0;
    memcpy(buf, prev, 32);
    o = 32;
    const uint8_t tail[] = {0, 0, 0, 0, 0, 0,   0,   1,   0, 0, 0, 0, 0,   0,   0,
                            2, 0, 0, 0, 3, 'a', 'b', 'c', 0, 0, 0, 3, 'd', 'e', 'f'};
    memcpy(buf + o, tail, sizeof(tail));
    crypto_hash_sha256(a, buf, sizeof(buf));
    store_audit_hash(prev, 1, 2, "abc", 3, "def", 3, b);
    assert_memory_equal(a, b, 32);
    /* Moving a byte from event to detail changes the hash. */
    store_audit_hash(prev, 1, 2, "ab", 2, "cdef", 4, a);
    assert_memory_not_equal(a, b, 32);
}

static void record_err(void *arg, hsb_err err)
{
    *(hsb_err *)arg = err;
}

static void test_triggers_refuse_update_delete(void **state)
{
    fixture *f = *state;
    sqlite3 *db;
    char *msg = NULL;
    hsb_err done = HSB_OK;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(store_audit_append(f->st, "e", "d", 0, NULL, NULL), HSB_OK);
    }
    assert_int_equal(store_sync(f->st), HSB_OK);

    /* Through the store (not as an agent): the trigger aborts the job. */
    hsb_stmt up = {"UPDATE audit SET detail = 'x' WHERE seq = 2", NULL, 0};
    assert_int_equal(store_write(f->st, &up, 1, 0, record_err, &done), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(done, HSB_EIO);
    hsb_stmt del = {"DELETE FROM audit", NULL, 0};
    assert_int_equal(store_write(f->st, &del, 1, 0, record_err, &done), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(done, HSB_EIO);

    /* Through a raw connection: the same. */
    assert_int_equal(sqlite3_open(f->db.path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_not_equal(
        sqlite3_exec(db, "UPDATE audit SET detail = 'x' WHERE seq = 2", NULL, NULL, &msg),
        SQLITE_OK);
    assert_non_null(strstr(msg, "append-only"));
    sqlite3_free(msg);
    msg = NULL;
    assert_int_not_equal(sqlite3_exec(db, "DELETE FROM audit WHERE seq = 3", NULL, NULL, &msg),
                         SQLITE_OK);
    assert_non_null(strstr(msg, "append-only"));
    sqlite3_free(msg);
    sqlite3_close(db);

    store_audit_report rep;
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.rows, 3);
}

static void tamper(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_tamper_detected(void **state)
{
    fixture *f = *state;
    store_audit_report rep;

    for (int i = 0; i < 6; i++) {
        char d[32];
        snprintf(d, sizeof(d), "n=%d", i);
        assert_int_equal(store_audit_append(f->st, "event", d, 0, NULL, NULL), HSB_OK);
    }
    assert_int_equal(store_sync(f->st), HSB_OK);

    /* Rewrite row 3's detail. */
    tamper(f->db.path, "DROP TRIGGER audit_no_update;"
                       "UPDATE audit SET detail = 'n=forged' WHERE seq = 3");
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_false(rep.ok);
    assert_int_equal(rep.first_bad_seq, 3);
    assert_int_equal(rep.rows, 6);
}

static void test_tamper_rehash_detected(void **state)
{
    fixture *f = *state;
    store_audit_report rep;

    for (int i = 0; i < 5; i++) {
        assert_int_equal(store_audit_append(f->st, "event", "x", 0, NULL, NULL), HSB_OK);
    }
    assert_int_equal(store_sync(f->st), HSB_OK);
    /* A forger who also replaces row 2's hash breaks the link to row 3. */
    tamper(f->db.path, "DROP TRIGGER audit_no_update;"
                       "UPDATE audit SET hash = zeroblob(32) WHERE seq = 2");
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_false(rep.ok);
    assert_int_equal(rep.first_bad_seq, 2);

    /* Deleting a row leaves a gap in seq: found at the row after it. */
    tamper(f->db.path, "UPDATE audit SET hash = (SELECT prev_hash FROM audit WHERE seq = 3) "
                       "WHERE seq = 2;"
                       "DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 4");
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_false(rep.ok);
    assert_int_equal(rep.first_bad_seq, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chain_append_verify, setup, teardown),
        cmocka_unit_test(test_hash_definition),
        cmocka_unit_test_setup_teardown(test_triggers_refuse_update_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tamper_rehash_detected, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
