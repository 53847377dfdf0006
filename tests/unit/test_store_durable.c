/*
 * tests/unit/test_store_durable.c - durable messages (save, remove, update deliveries, load in id
 * order, max id) and dead letters (add, paged list, get, purge one and all, take for replay),
 * against a real SQLite file, including a reopen to prove the rows survive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/store/store.h"

#include "store_tmpdb.h"

typedef struct fixture {
    store_tmpdb db;
    store *st;
} fixture;

static store *fixture_open(fixture *f)
{
    store_config cfg;
    store *st = NULL;
    store_config_defaults(&cfg);
    cfg.path = f->db.path;
    assert_int_equal(store_open(&cfg, &st), HSB_OK);
    return st;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    if (store_tmpdb_make(&f->db, "durable") != 0) {
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

static void record_err(void *arg, hsb_err err)
{
    *(hsb_err *)arg = err;
}

typedef struct loaded {
    size_t n;
    uint64_t ids[16];
    uint32_t deliveries[16];
    char agents[16][16];
    size_t env_len[16];
    uint8_t lane[16];
    int64_t deadline[16];
} loaded;

static bool load_row(void *arg, const store_durable_rec *rec)
{
    loaded *l = arg;
    assert_true(l->n < 16);
    l->ids[l->n] = rec->id;
    l->deliveries[l->n] = rec->deliveries;
    snprintf(l->agents[l->n], 16, "%s", rec->agent);
    l->env_len[l->n] = rec->envelope_len;
    l->lane[l->n] = rec->lane;
    l->deadline[l->n] = rec->deadline;
    l->n++;
    return true;
}

static void save(store *st, uint64_t id, const char *agent, hsb_err *done)
{
    char env[32];
    snprintf(env, sizeof(env), "envelope-%llu", (unsigned long long)id);
    store_durable_rec rec = {
        .id = id,
        .agent = agent,
        .lane = (uint8_t)(id % 4),
        .deadline = 1700000000000 + (int64_t)id,
        .deliveries = 0,
        .envelope = env,
        .envelope_len = strlen(env),
        .enqueued_ms = 5,
    };
    assert_int_equal(store_durable_save(st, &rec, 0, record_err, done), HSB_OK);
}

static void test_durable_save_remove_load(void **state)
{
    fixture *f = *state;
    hsb_err d[6];
    loaded l = {0};
    uint64_t n, max;

    /* Saved out of order; loaded in id order. */
    uint64_t ids[] = {30, 10, 20, 50, 40};
    for (size_t i = 0; i < 5; i++) {
        d[i] = HSB_EINTERNAL;
        save(f->st, ids[i], i % 2 ? "consent" : "", &d[i]);
    }
    assert_int_equal(store_sync(f->st), HSB_OK);
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(d[i], HSB_OK);
    }
    assert_int_equal(store_durable_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 5);

    assert_int_equal(store_durable_remove(f->st, 20, 0, record_err, &d[0]), HSB_OK);
    assert_int_equal(store_durable_remove(f->st, 999, 0, record_err, &d[1]), HSB_OK);
    assert_int_equal(store_durable_set_deliveries(f->st, 40, 3, 0, record_err, &d[2]), HSB_OK);
    assert_int_equal(store_durable_set_deliveries(f->st, 999, 3, 0, NULL, NULL), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(d[0], HSB_OK);
    assert_int_equal(d[1], HSB_OK); /* a missing id is not an error */
    assert_int_equal(d[2], HSB_OK);

    /* Reopen: everything committed is still there. */
    assert_int_equal(store_close(f->st), HSB_OK);
    f->st = fixture_open(f);
    assert_int_equal(store_durable_load(f->st, load_row, &l), HSB_OK);
    assert_int_equal(l.n, 4);
    assert_int_equal(l.ids[0], 10);
    assert_int_equal(l.ids[1], 30);
    assert_int_equal(l.ids[2], 40);
    assert_int_equal(l.ids[3], 50);
    assert_int_equal(l.deliveries[2], 3);
    assert_int_equal(l.deliveries[0], 0);
    assert_string_equal(l.agents[0], "consent"); /* id 10 was i = 1 */
    assert_string_equal(l.agents[1], "");
    assert_int_equal(l.env_len[0], strlen("envelope-10"));
    assert_int_equal(l.lane[1], 30 % 4);
    assert_int_equal(l.deadline[3], 1700000000050);

    assert_int_equal(store_durable_max_id(f->st, &max), HSB_OK);
    assert_int_equal(max, 50);

    /* Saving an id again replaces the row. */
    save(f->st, 50, "x", &d[0]);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_durable_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 4);

    store_durable_rec bad = {.id = 1};
    assert_int_equal(store_durable_save(f->st, &bad, 0, NULL, NULL), HSB_EINVAL);
}

static bool stop_row(void *arg, const store_durable_rec *rec)
{
    (*(int *)arg)++;
    return false;
}

static void test_durable_empty_and_stop(void **state)
{
    fixture *f = *state;
    uint64_t max = 1;
    int calls = 0;
    hsb_err d;

    assert_int_equal(store_durable_max_id(f->st, &max), HSB_OK);
    assert_int_equal(max, 0);
    save(f->st, 1, "a", &d);
    save(f->st, 2, "a", &d);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_durable_load(f->st, stop_row, &calls), HSB_OK);
    assert_int_equal(calls, 1);
}

/* ---- dead letters ----------------------------------------------------------------------- */

typedef struct dl_list {
    size_t n;
    uint64_t ids[64];
    uint64_t msg_ids[64];
    char reason[64];
    char agent[64];
    uint32_t deliveries;
    size_t env_len;
    uint64_t ts;
} dl_list;

static bool dl_row(void *arg, const store_dlq_rec *rec)
{
    dl_list *l = arg;
    l->ids[l->n] = rec->id;
    l->msg_ids[l->n] = rec->msg_id;
    l->n++;
    snprintf(l->reason, sizeof(l->reason), "%s", rec->reason);
    snprintf(l->agent, sizeof(l->agent), "%s", rec->agent);
    l->deliveries = rec->deliveries;
    l->env_len = rec->envelope_len;
    l->ts = rec->ts;
    return true;
}

static void dl_add(store *st, uint64_t msg_id, const char *reason)
{
    store_dlq_rec rec = {
        .msg_id = msg_id,
        .agent = "research",
        .reason = reason,
        .deliveries = 5,
        .envelope = "env",
        .envelope_len = 3,
    };
    assert_int_equal(store_dlq_add(st, &rec, 0, NULL, NULL), HSB_OK);
}

typedef struct purge_res {
    hsb_err err;
    uint64_t n;
} purge_res;

static void purge_done(void *arg, hsb_err err, uint64_t n)
{
    purge_res *r = arg;
    r->err = err;
    r->n = n;
}

typedef struct take_res {
    hsb_err err;
    uint64_t msg_id;
    char reason[32];
    char env[8];
} take_res;

static void take_done(void *arg, hsb_err err, const store_dlq_rec *rec)
{
    take_res *r = arg;
    r->err = err;
    if (rec != NULL) {
        r->msg_id = rec->msg_id;
        snprintf(r->reason, sizeof(r->reason), "%s", rec->reason);
        memcpy(r->env, rec->envelope, rec->envelope_len < 7 ? rec->envelope_len : 7);
    }
}

static void test_dlq(void **state)
{
    fixture *f = *state;
    dl_list l = {0};
    uint64_t n, max;
    purge_res pr;
    take_res tr = {0};

    for (uint64_t i = 1; i <= 25; i++) {
        dl_add(f->st, 100 + i, i == 7 ? "nack: bad input" : "max_deliveries");
    }
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_dlq_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 25);
    assert_int_equal(store_durable_max_id(f->st, &max), HSB_OK);
    assert_int_equal(max, 125); /* dead letters count for id seeding */

    /* Paged by keyset: 10 + 10 + 5. */
    assert_int_equal(store_dlq_list(f->st, 0, 10, dl_row, &l), HSB_OK);
    assert_int_equal(l.n, 10);
    uint64_t last = l.ids[9];
    l.n = 0;
    assert_int_equal(store_dlq_list(f->st, last, 10, dl_row, &l), HSB_OK);
    assert_int_equal(l.n, 10);
    assert_true(l.ids[0] > last);
    last = l.ids[9];
    l.n = 0;
    assert_int_equal(store_dlq_list(f->st, last, 10, dl_row, &l), HSB_OK);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.msg_ids[4], 125);
    assert_string_equal(l.agent, "research");
    assert_int_equal(l.deliveries, 5);
    assert_int_equal(l.env_len, 3);
    assert_true(l.ts > 1600000000000ull);

    /* Get one. */
    l.n = 0;
    assert_int_equal(store_dlq_get(f->st, 7, dl_row, &l), HSB_OK);
    assert_int_equal(l.n, 1);
    assert_string_equal(l.reason, "nack: bad input");
    assert_int_equal(store_dlq_get(f->st, 999, dl_row, &l), HSB_ENOTFOUND);

    /* Take for replay: returned after commit, and gone. */
    assert_int_equal(store_dlq_take(f->st, 7, take_done, &tr), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(tr.err, HSB_OK);
    assert_int_equal(tr.msg_id, 107);
    assert_string_equal(tr.reason, "nack: bad input");
    assert_string_equal(tr.env, "env");
    assert_int_equal(store_dlq_get(f->st, 7, dl_row, &l), HSB_ENOTFOUND);
    assert_int_equal(store_dlq_take(f->st, 7, take_done, &tr), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(tr.err, HSB_ENOTFOUND);
    assert_int_equal(store_dlq_take(f->st, 7, NULL, NULL), HSB_EINVAL);

    /* Purge one, a missing one, then all. */
    assert_int_equal(store_dlq_purge(f->st, 8, purge_done, &pr), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(pr.err, HSB_OK);
    assert_int_equal(pr.n, 1);
    assert_int_equal(store_dlq_purge(f->st, 8, purge_done, &pr), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(pr.err, HSB_ENOTFOUND);
    assert_int_equal(store_dlq_purge(f->st, 0, purge_done, &pr), HSB_OK);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(pr.err, HSB_OK);
    assert_int_equal(pr.n, 23);
    assert_int_equal(store_dlq_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 0);

    store_dlq_rec bad = {.msg_id = 1};
    assert_int_equal(store_dlq_add(f->st, &bad, 0, NULL, NULL), HSB_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_durable_save_remove_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_empty_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dlq, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
