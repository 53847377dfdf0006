/* Unit tests for bus/batch.c: hold by key, release at batch_max and at linger. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/batch.h"

static const uint32_t weights[3] = {4, 2, 1};

static bus_prioq_entry mk(uint64_t id, const char *key)
{
    hsb_envelope env;
    hsb_envelope_init(&env);
    env.id = id;
    strcpy(env.batch, key);
    bus_prioq_entry e = {.msg = bus_msg_new(&env)};
    assert_non_null(e.msg);
    return e;
}

static void test_batch_release_at_max(void **state)
{
    (void)state;
    bus_batcher bt;
    bus_prioq q;
    bus_batch_init(&bt);
    bus_prioq_init(&q, 100, 1 << 20, weights);
    bool ready = true;
    for (uint64_t i = 1; i <= 3; i++) {
        assert_int_equal(bus_batch_add(&bt, "k", mk(i, "k"), 100, 4, &ready), HSB_OK);
        assert_false(ready);
    }
    assert_int_equal(bus_batch_add(&bt, "other", mk(9, "other"), 100, 4, &ready), HSB_OK);
    assert_int_equal(bt.held_msgs, 4);
    assert_int_equal(q.count, 0); /* nothing released yet */
    assert_int_equal(bus_batch_add(&bt, "k", mk(4, "k"), 101, 4, &ready), HSB_OK);
    assert_true(ready);
    assert_int_equal(bus_batch_release_key(&bt, "k", &q), 4);
    assert_int_equal(q.count, 4);
    assert_int_equal(bt.held_msgs, 1);
    for (uint64_t i = 1; i <= 4; i++) { /* in arrival order */
        bus_prioq_entry e;
        assert_true(bus_prioq_get(&q, &e));
        assert_int_equal(e.msg->env.id, i);
        bus_msg_unref(e.msg);
    }
    bus_batch_fini(&bt); /* drops "other" */
    bus_prioq_fini(&q);
}

static void test_batch_release_at_linger(void **state)
{
    (void)state;
    bus_batcher bt;
    bus_prioq q;
    bus_batch_init(&bt);
    bus_prioq_init(&q, 100, 1 << 20, weights);
    bool ready;
    bus_batch_add(&bt, "a", mk(1, "a"), 100, 64, &ready);
    bus_batch_add(&bt, "b", mk(2, "b"), 101, 64, &ready);
    bus_batch_add(&bt, "a", mk(3, "a"), 102, 64, &ready);
    assert_int_equal(bus_batch_next_due(&bt, 5), 105);
    assert_int_equal(bus_batch_release_due(&bt, 104, 5, &q), 0);
    assert_int_equal(bus_batch_release_due(&bt, 105, 5, &q), 2); /* "a", both */
    assert_int_equal(bus_batch_next_due(&bt, 5), 106);
    assert_int_equal(bus_batch_release_due(&bt, 106, 5, &q), 1);
    assert_int_equal(bus_batch_next_due(&bt, 5), 0);
    assert_int_equal(bt.held_msgs, 0);
    assert_int_equal(bt.held_bytes, 0);
    assert_int_equal(q.count, 3);
    /* A freed group slot is reused and its clock restarts. */
    bus_batch_add(&bt, "c", mk(4, "c"), 500, 64, &ready);
    assert_int_equal(bus_batch_next_due(&bt, 5), 505);
    assert_int_equal(bt.n_groups, 2);
    bus_batch_fini(&bt);
    bus_prioq_fini(&q);
}

static bool take_odd(void *arg, const bus_prioq_entry *e)
{
    (void)arg;
    if (e->msg->env.id % 2 == 1) {
        bus_msg_unref(e->msg);
        return true;
    }
    return false;
}

static void test_batch_remove_if(void **state)
{
    (void)state;
    bus_batcher bt;
    bus_prioq q;
    bus_batch_init(&bt);
    bus_prioq_init(&q, 100, 1 << 20, weights);
    bool ready;
    for (uint64_t i = 1; i <= 4; i++) {
        bus_batch_add(&bt, "k", mk(i, "k"), 0, 64, &ready);
    }
    assert_int_equal(bus_batch_remove_if(&bt, take_odd, NULL), 2);
    assert_int_equal(bt.held_msgs, 2);
    assert_int_equal(bus_batch_release_key(&bt, "k", &q), 2);
    bus_prioq_entry e;
    assert_true(bus_prioq_get(&q, &e));
    assert_int_equal(e.msg->env.id, 2);
    bus_msg_unref(e.msg);
    bus_batch_fini(&bt);
    bus_prioq_fini(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_release_at_max),
        cmocka_unit_test(test_batch_release_at_linger),
        cmocka_unit_test(test_batch_remove_if),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
