/* Unit tests for bus/prioq.c: lanes, weighted round robin, bounds, displacement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/prioq.h"

static const uint32_t weights[3] = {4, 2, 1};

static bus_prioq_entry mk(uint8_t prio, uint64_t id, size_t body, bool durable)
{
    static uint8_t zeros[4096];
    hsb_envelope env;
    hsb_envelope_init(&env);
    env.prio = prio;
    env.id = id;
    env.durable = durable;
    env.body = body > 0 ? zeros : NULL;
    env.body_len = body;
    bus_prioq_entry e = {.msg = bus_msg_new(&env), .deliveries = 0};
    assert_non_null(e.msg);
    return e;
}

static void put_ok(bus_prioq *q, bus_prioq_entry e)
{
    bus_prioq_entry v[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv = 99;
    assert_int_equal(bus_prioq_put(q, e, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_OK);
    assert_int_equal(nv, 0);
}

static uint64_t get_id(bus_prioq *q)
{
    bus_prioq_entry e;
    assert_true(bus_prioq_get(q, &e));
    uint64_t id = e.msg->env.id;
    bus_msg_unref(e.msg);
    return id;
}

static void test_prioq_fifo_within_lane(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 100, 1 << 20, weights);
    for (uint64_t i = 1; i <= 40; i++) { /* past the first ring size: growth keeps order */
        put_ok(&q, mk(HSB_PRIO_NORMAL, i, 0, false));
    }
    for (uint64_t i = 1; i <= 40; i++) {
        assert_int_equal(get_id(&q), i);
    }
    bus_prioq_entry e;
    assert_false(bus_prioq_get(&q, &e));
    assert_int_equal(q.count, 0);
    assert_int_equal(q.bytes, 0);
    bus_prioq_fini(&q);
}

static void test_prioq_critical_first_always(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 100, 1 << 20, weights);
    put_ok(&q, mk(HSB_PRIO_HIGH, 1, 0, false));
    put_ok(&q, mk(HSB_PRIO_LOW, 2, 0, false));
    put_ok(&q, mk(HSB_PRIO_CRITICAL, 3, 0, false));
    assert_int_equal(get_id(&q), 3);
    put_ok(&q, mk(HSB_PRIO_CRITICAL, 4, 0, false)); /* arrives mid-stream: still first */
    assert_int_equal(get_id(&q), 4);
    assert_int_equal(get_id(&q), 1);
    assert_int_equal(get_id(&q), 2);
    bus_prioq_fini(&q);
}

static void test_prioq_weighted_round_robin(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 1000, 1 << 24, weights);
    /* A backlog in every lane: ids 100+ high, 200+ normal, 300+ low. */
    for (uint64_t i = 0; i < 20; i++) {
        put_ok(&q, mk(HSB_PRIO_HIGH, 100 + i, 0, false));
        put_ok(&q, mk(HSB_PRIO_NORMAL, 200 + i, 0, false));
        put_ok(&q, mk(HSB_PRIO_LOW, 300 + i, 0, false));
    }
    int counts[3] = {0, 0, 0};
    uint64_t order[14];
    for (int i = 0; i < 14; i++) {
        order[i] = get_id(&q);
        counts[order[i] / 100 - 1]++;
    }
    /* Two full rounds: 4 high, 2 normal, 1 low each, in that order. */
    const uint64_t want[14] = {100, 101, 102, 103, 200, 201, 300,
                               104, 105, 106, 107, 202, 203, 301};
    for (int i = 0; i < 14; i++) {
        assert_int_equal(order[i], want[i]);
    }
    assert_int_equal(counts[0], 8);
    assert_int_equal(counts[1], 4);
    assert_int_equal(counts[2], 2);
    bus_prioq_fini(&q);
}

static void test_prioq_low_never_starves(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 10000, 1 << 26, weights);
    put_ok(&q, mk(HSB_PRIO_LOW, 1, 0, false));
    /* High traffic keeps coming: the low message still goes within one round of 7. */
    int taken = 0;
    bool low_seen = false;
    for (uint64_t i = 0; i < 50 && !low_seen; i++) {
        put_ok(&q, mk(HSB_PRIO_HIGH, 1000 + i, 0, false));
        put_ok(&q, mk(HSB_PRIO_HIGH, 2000 + i, 0, false));
        low_seen = get_id(&q) == 1;
        taken++;
    }
    assert_true(low_seen);
    assert_true(taken <= 5);
    bus_prioq_fini(&q);
}

static void test_prioq_busy_by_count(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 3, 1 << 20, weights);
    for (uint64_t i = 1; i <= 3; i++) {
        put_ok(&q, mk(HSB_PRIO_NORMAL, i, 0, false));
    }
    bus_prioq_entry e = mk(HSB_PRIO_NORMAL, 4, 0, false);
    bus_prioq_entry v[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv;
    assert_int_equal(bus_prioq_put(&q, e, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_EBUSY);
    assert_int_equal(q.count, 3);
    bus_msg_unref(e.msg); /* still ours after EBUSY */
    /* A reservation counts against the bounds too. */
    bus_prioq_fini(&q);
    bus_prioq_init(&q, 3, 1 << 20, weights);
    put_ok(&q, mk(HSB_PRIO_NORMAL, 1, 0, false));
    e = mk(HSB_PRIO_NORMAL, 2, 0, false);
    assert_int_equal(bus_prioq_put(&q, e, 2, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_EBUSY);
    assert_int_equal(bus_prioq_put(&q, e, 1, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_OK);
    bus_prioq_fini(&q);
}

static void test_prioq_busy_by_bytes(void **state)
{
    (void)state;
    bus_prioq q;
    size_t one = sizeof(bus_msg) + 1000;
    bus_prioq_init(&q, 100, 2 * one + sizeof(bus_msg), weights);
    put_ok(&q, mk(HSB_PRIO_NORMAL, 1, 1000, false));
    put_ok(&q, mk(HSB_PRIO_NORMAL, 2, 1000, false));
    assert_int_equal(q.bytes, 2 * one);
    bus_prioq_entry e = mk(HSB_PRIO_NORMAL, 3, 1000, false);
    bus_prioq_entry v[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv;
    assert_int_equal(bus_prioq_put(&q, e, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_EBUSY);
    assert_false(bus_prioq_has_room(&q, e.msg->size, 0, 0));
    bus_msg_unref(e.msg);
    e = mk(HSB_PRIO_NORMAL, 4, 0, false); /* a small one still fits */
    assert_true(bus_prioq_has_room(&q, e.msg->size, 0, 0));
    put_ok(&q, e);
    bus_prioq_fini(&q);
}

static void test_prioq_displacement(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 4, 1 << 20, weights);
    put_ok(&q, mk(HSB_PRIO_NORMAL, 1, 0, false));
    put_ok(&q, mk(HSB_PRIO_LOW, 2, 0, false));
    put_ok(&q, mk(HSB_PRIO_LOW, 3, 0, false));
    put_ok(&q, mk(HSB_PRIO_LOW, 4, 0, true)); /* newest low, but durable */
    bus_prioq_entry v[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv = 0;
    /* A critical message displaces the newest non-durable message of the lowest lane: 3. */
    bus_prioq_entry c = mk(HSB_PRIO_CRITICAL, 5, 0, false);
    assert_int_equal(bus_prioq_put(&q, c, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_OK);
    assert_int_equal(nv, 1);
    assert_int_equal(v[0].msg->env.id, 3);
    bus_msg_unref(v[0].msg);
    assert_int_equal(q.count, 4);
    /* Same lane never displaces. */
    bus_prioq_entry l = mk(HSB_PRIO_LOW, 6, 0, false);
    assert_int_equal(bus_prioq_put(&q, l, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_EBUSY);
    bus_msg_unref(l.msg);
    /* Next high: low lane has 2 (oldest, non-durable) -> displaced before normal's 1. */
    bus_prioq_entry h = mk(HSB_PRIO_HIGH, 7, 0, false);
    assert_int_equal(bus_prioq_put(&q, h, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_OK);
    assert_int_equal(nv, 1);
    assert_int_equal(v[0].msg->env.id, 2);
    bus_msg_unref(v[0].msg);
    /* Now low holds only the durable 4: the next victim comes from normal (1). */
    h = mk(HSB_PRIO_HIGH, 8, 0, false);
    assert_int_equal(bus_prioq_put(&q, h, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_OK);
    assert_int_equal(nv, 1);
    assert_int_equal(v[0].msg->env.id, 1);
    bus_msg_unref(v[0].msg);
    /* Only durable or higher messages left: refused. */
    h = mk(HSB_PRIO_HIGH, 9, 0, false);
    assert_int_equal(bus_prioq_put(&q, h, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_EBUSY);
    bus_msg_unref(h.msg);
    assert_int_equal(get_id(&q), 5);
    assert_int_equal(get_id(&q), 7);
    assert_int_equal(get_id(&q), 8);
    assert_int_equal(get_id(&q), 4);
    bus_prioq_fini(&q);
}

static void test_prioq_displacement_by_bytes_takes_several(void **state)
{
    (void)state;
    bus_prioq q;
    size_t small = sizeof(bus_msg) + 1000;
    bus_prioq_init(&q, 100, 4 * small, weights);
    for (uint64_t i = 1; i <= 4; i++) {
        put_ok(&q, mk(HSB_PRIO_LOW, i, 1000, false));
    }
    bus_prioq_entry v[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv = 0;
    /* Three small ones free 3 * sizeof + 3000 bytes; two would free too little. */
    bus_prioq_entry big = mk(HSB_PRIO_CRITICAL, 9, 4000, false);
    assert_true(2 * small < big.msg->size && 3 * small >= big.msg->size);
    assert_int_equal(bus_prioq_put(&q, big, 0, 0, v, BUS_PRIOQ_VICTIMS_MAX, &nv), HSB_OK);
    assert_int_equal(nv, 3);
    assert_int_equal(v[0].msg->env.id, 4); /* newest first */
    assert_int_equal(v[1].msg->env.id, 3);
    assert_int_equal(v[2].msg->env.id, 2);
    for (size_t i = 0; i < nv; i++) {
        bus_msg_unref(v[i].msg);
    }
    assert_int_equal(get_id(&q), 9);
    assert_int_equal(get_id(&q), 1);
    bus_prioq_fini(&q);
}

static void test_prioq_put_front_and_remove_if(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 2, 1 << 20, weights);
    put_ok(&q, mk(HSB_PRIO_NORMAL, 1, 0, false));
    put_ok(&q, mk(HSB_PRIO_NORMAL, 2, 0, false));
    /* Redelivery ignores the bounds and goes to the front of its lane. */
    bus_prioq_entry r = mk(HSB_PRIO_NORMAL, 3, 0, false);
    r.deliveries = 2;
    assert_int_equal(bus_prioq_put_force(&q, r, true), HSB_OK);
    assert_int_equal(q.count, 3);
    bus_prioq_entry e;
    assert_true(bus_prioq_get(&q, &e));
    assert_int_equal(e.msg->env.id, 3);
    assert_int_equal(e.deliveries, 2);
    bus_msg_unref(e.msg);
    bus_prioq_fini(&q);
}

static bool take_even(void *arg, const bus_prioq_entry *e)
{
    (void)arg;
    if (e->msg->env.id % 2 == 0) {
        bus_msg_unref(e->msg);
        return true;
    }
    return false;
}

static void test_prioq_remove_if_keeps_order(void **state)
{
    (void)state;
    bus_prioq q;
    bus_prioq_init(&q, 100, 1 << 20, weights);
    for (uint64_t i = 1; i <= 10; i++) {
        put_ok(&q, mk(HSB_PRIO_LOW, i, 0, false));
    }
    assert_int_equal(bus_prioq_remove_if(&q, take_even, NULL), 5);
    assert_int_equal(q.count, 5);
    assert_int_equal(bus_prioq_lane_len(&q, HSB_PRIO_LOW), 5);
    for (uint64_t i = 1; i <= 9; i += 2) {
        assert_int_equal(get_id(&q), i);
    }
    bus_prioq_fini(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prioq_fifo_within_lane),
        cmocka_unit_test(test_prioq_critical_first_always),
        cmocka_unit_test(test_prioq_weighted_round_robin),
        cmocka_unit_test(test_prioq_low_never_starves),
        cmocka_unit_test(test_prioq_busy_by_count),
        cmocka_unit_test(test_prioq_busy_by_bytes),
        cmocka_unit_test(test_prioq_displacement),
        cmocka_unit_test(test_prioq_displacement_by_bytes_takes_several),
        cmocka_unit_test(test_prioq_put_front_and_remove_if),
        cmocka_unit_test(test_prioq_remove_if_keeps_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
