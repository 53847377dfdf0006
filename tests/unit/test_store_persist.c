/*
 * tests/unit/test_store_persist.c - the bus_persist_ops adapter: save reports through post_done
 * only after COMMIT (checked from another connection), delivered/remove/dead_letter/audit reach
 * their tables, store_persist_load decodes what was saved, and a full queue refuses a save at once
 * while bookkeeping still goes through.
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
#include "proto/codec.h"

#include "store_tmpdb.h"

typedef struct fixture {
    store_tmpdb db;
    store *st;
    store_persist *p;
    sqlite3 *check; /* raw read connection, used on the writer thread by post_done only */
    pthread_mutex_t mu;
    int posts;
    uint64_t last_token;
    hsb_err last_err;
    int visible_at_post; /* rows in durable with the saved id, seen from post_done */
} fixture;

static void post_done(void *arg, uint64_t token, hsb_err err)
{
    fixture *f = arg;
    sqlite3_stmt *q;
    int n = -1;
    sqlite3_prepare_v2(f->check, "SELECT count(*) FROM durable WHERE id = ?", -1, &q, NULL);
    sqlite3_bind_int64(q, 1, (sqlite3_int64)token); /* the tests use token == id */
    if (sqlite3_step(q) == SQLITE_ROW) {
        n = sqlite3_column_int(q, 0);
    }
    sqlite3_finalize(q);
    pthread_mutex_lock(&f->mu);
    f->posts++;
    f->last_token = token;
    f->last_err = err;
    f->visible_at_post = n;
    pthread_mutex_unlock(&f->mu);
}

static int setup_with(void **state, size_t queue_max)
{
    fixture *f = calloc(1, sizeof(*f));
    store_config cfg;
    if (store_tmpdb_make(&f->db, "persist") != 0) {
        return -1;
    }
    store_config_defaults(&cfg);
    cfg.path = f->db.path;
    cfg.queue_max = queue_max;
    if (store_open(&cfg, &f->st) != HSB_OK) {
        return -1;
    }
    if (store_persist_new(f->st, post_done, f, &f->p) != HSB_OK) {
        return -1;
    }
    if (sqlite3_open_v2(f->db.path, &f->check, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        return -1;
    }
    pthread_mutex_init(&f->mu, NULL);
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, 0);
}

static int setup_small(void **state)
{
    return setup_with(state, 2);
}

static int teardown(void **state)
{
    fixture *f = *state;
    assert_int_equal(store_close(f->st), HSB_OK);
    store_persist_free(f->p);
    sqlite3_close(f->check);
    store_tmpdb_remove(&f->db);
    pthread_mutex_destroy(&f->mu);
    free(f);
    return 0;
}

/* A routed message as the bus would hold it: body = msgpack "hi" (0xa2 'h' 'i'). */
static bus_msg *msg_new(uint64_t id)
{
    static const uint8_t body[] = {0xa2, 'h', 'i'};
    bus_msg *m = calloc(1, sizeof(*m) + sizeof(body));
    hsb_envelope_init(&m->env);
    memcpy(m->data, body, sizeof(body));
    m->env.id = id;
    m->env.prio = HSB_PRIO_HIGH;
    m->env.durable = true;
    m->env.deadline = 1700000000000;
    snprintf(m->env.from, sizeof(m->env.from), "portal");
    snprintf(m->env.to, sizeof(m->env.to), "consent");
    snprintf(m->env.type, sizeof(m->env.type), "consent.check");
    m->env.body = m->data;
    m->env.body_len = sizeof(body);
    m->enqueue_ms = 42;
    m->size = sizeof(*m) + sizeof(body);
    m->refs = 1;
    return m;
}

typedef struct restored {
    int n;
    uint64_t id;
    uint32_t deliveries;
    char to[HSB_NAME_MAX + 1];
    char type[HSB_NAME_MAX + 1];
    uint8_t prio;
    uint8_t body[8];
    size_t body_len;
} restored;

static bool restore_fn(void *arg, const hsb_envelope *env)
{
    restored *r = arg;
    r->n++;
    r->id = env->id;
    if (env->id == 1001) {
        r->deliveries = env->deliveries;
    }
    snprintf(r->to, sizeof(r->to), "%s", env->to);
    snprintf(r->type, sizeof(r->type), "%s", env->type);
    r->prio = env->prio;
    r->body_len = env->body_len;
    memcpy(r->body, env->body, env->body_len < 8 ? env->body_len : 8);
    return true;
}

static void test_save_posts_after_commit(void **state)
{
    fixture *f = *state;
    const bus_persist_ops *ops = store_persist_ops();
    bus_msg *m = msg_new(1001);
    restored r = {0};

    assert_int_equal(ops->save(f->p, m, 1001), HSB_OK);
    bus_msg *m2 = msg_new(1002);
    assert_int_equal(ops->save(f->p, m2, 1002), HSB_OK);
    /* The adapter copied what it needs: the bus may free the messages at once. */
    free(m2);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(f->posts, 2);
    assert_int_equal(f->last_token, 1002);
    assert_int_equal(f->last_err, HSB_OK);
    assert_int_equal(f->visible_at_post, 1); /* committed before post_done ran */

    /* Restored at start-up with its fields. */
    ops->delivered(f->p, 1001, 3);
    assert_int_equal(store_sync(f->st), HSB_OK);
    uint64_t bad = 9;
    assert_int_equal(store_persist_load(f->st, restore_fn, &r, &bad), HSB_OK);
    assert_int_equal(bad, 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.id, 1002);      /* id order: 1002 is the last one */
    assert_int_equal(r.deliveries, 3); /* from ops->delivered */
    assert_string_equal(r.to, "consent");
    assert_string_equal(r.type, "consent.check");
    assert_int_equal(r.prio, HSB_PRIO_HIGH);
    assert_int_equal(r.body_len, 3);
    assert_memory_equal(r.body, "\xa2hi", 3);

    /* Acked: removed. */
    ops->remove(f->p, 1001);
    ops->remove(f->p, 1002);
    assert_int_equal(store_sync(f->st), HSB_OK);
    uint64_t n = 9;
    assert_int_equal(store_durable_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 0);

    /* Dead letter and audit. */
    ops->dead_letter(f->p, m, "consent", 5, "max_deliveries");
    ops->audit(f->p, "dead_letter", "agent=consent id=1001");
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_dlq_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 1);
    store_audit_report rep;
    assert_int_equal(store_audit_verify(f->st, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.rows, 1);
    assert_int_equal(store_persist_errors(f->p), 0);
    free(m);
}

static bool dl_env(void *arg, const store_dlq_rec *rec)
{
    hsb_dec dec;
    hsb_envelope env;
    assert_int_equal(hsb_dec_init(&dec), HSB_OK);
    assert_int_equal(hsb_dec_envelope(&dec, rec->envelope, rec->envelope_len, &env), HSB_OK);
    assert_int_equal(env.id, 7);
    assert_string_equal(env.from, "portal");
    assert_int_equal(rec->msg_id, 7);
    assert_int_equal(rec->deliveries, 5);
    hsb_dec_fini(&dec);
    (*(int *)arg)++;
    return true;
}

static void test_dead_letter_keeps_envelope(void **state)
{
    fixture *f = *state;
    bus_msg *m = msg_new(7);
    int seen = 0;
    store_persist_ops()->dead_letter(f->p, m, "consent", 5, "expired");
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(store_dlq_list(f->st, 0, 10, dl_env, &seen), HSB_OK);
    assert_int_equal(seen, 1);
    free(m);
}

/* A gate job holds the writer so that the queue fills up. */
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

static void test_full_queue_refuses_save(void **state)
{
    fixture *f = *state;
    const bus_persist_ops *ops = store_persist_ops();
    gate g = {.entered = false, .open = false};
    bus_msg *m = msg_new(5);

    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    assert_int_equal(store_pool_submit(store_pool_of(f->st), gate_run, NULL, &g, 0), HSB_OK);
    pthread_mutex_lock(&g.mu);
    while (!g.entered) {
        pthread_cond_wait(&g.cv, &g.mu);
    }
    pthread_mutex_unlock(&g.mu);

    assert_int_equal(ops->save(f->p, m, 5), HSB_OK);
    m->env.id = 6;
    assert_int_equal(ops->save(f->p, m, 6), HSB_OK);
    m->env.id = 7;
    assert_int_equal(ops->save(f->p, m, 7), HSB_EBUSY); /* refused at once, no post */
    ops->remove(f->p, 5);                               /* bookkeeping is forced through */
    ops->audit(f->p, "x", "y");

    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(store_sync(f->st), HSB_OK);
    assert_int_equal(f->posts, 2);
    uint64_t n;
    assert_int_equal(store_durable_count(f->st, &n), HSB_OK);
    assert_int_equal(n, 1); /* 6 */
    assert_int_equal(store_persist_errors(f->p), 0);
    store_pool_stats ps;
    store_pool_stats_get(store_pool_of(f->st), &ps);
    assert_int_equal(ps.refused_busy, 1);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&g.mu);
    free(m);
}

static void test_new_errors(void **state)
{
    (void)state;
    store_persist *p;
    assert_int_equal(store_persist_new(NULL, post_done, NULL, &p), HSB_EINVAL);
    store_persist_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_save_posts_after_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_keeps_envelope, setup, teardown),
        cmocka_unit_test_setup_teardown(test_full_queue_refuses_save, setup_small, teardown),
        cmocka_unit_test(test_new_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
