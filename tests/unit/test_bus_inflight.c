/* Unit tests for bus/inflight.c (and the id map under it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/idmap.h"
#include "bus/inflight.h"

static bus_msg *mk(uint64_t id)
{
    hsb_envelope env;
    hsb_envelope_init(&env);
    env.id = id;
    bus_msg *m = bus_msg_new(&env);
    assert_non_null(m);
    return m;
}

static void test_inflight_add_take(void **state)
{
    (void)state;
    bus_inflight t;
    bus_inflight_init(&t);
    for (uint64_t id = 1; id <= 100; id++) {
        bus_inflight_entry e = {.msg = mk(id), .deliveries = (uint32_t)id, .ack_deadline = id};
        assert_int_equal(bus_inflight_add(&t, &e), HSB_OK);
    }
    assert_int_equal(bus_inflight_len(&t), 100);
    bus_inflight_entry dup = {.msg = mk(7)};
    assert_int_equal(bus_inflight_add(&t, &dup), HSB_EINVAL);
    bus_msg_unref(dup.msg);
    /* Take in an order that moves entries around. */
    for (uint64_t id = 1; id <= 100; id += 3) {
        bus_inflight_entry out;
        assert_true(bus_inflight_take(&t, id, &out));
        assert_int_equal(out.msg->env.id, id);
        assert_int_equal(out.deliveries, id);
        bus_msg_unref(out.msg);
        assert_false(bus_inflight_take(&t, id, &out)); /* settled once */
    }
    for (uint64_t id = 1; id <= 100; id++) {
        bus_inflight_entry *e = bus_inflight_get(&t, id);
        if ((id - 1) % 3 == 0) {
            assert_null(e);
        } else {
            assert_non_null(e);
            assert_int_equal(e->ack_deadline, id);
        }
    }
    bus_inflight_entry out;
    size_t n = 0;
    while (bus_inflight_pop(&t, &out)) {
        bus_msg_unref(out.msg);
        n++;
    }
    assert_int_equal(n, 66);
    bus_inflight_fini(&t);
}

static void test_inflight_fini_drops_refs(void **state)
{
    (void)state;
    bus_inflight t;
    bus_inflight_init(&t);
    bus_msg *m = mk(5);
    bus_inflight_entry e = {.msg = bus_msg_ref(m)};
    assert_int_equal(bus_inflight_add(&t, &e), HSB_OK);
    bus_inflight_fini(&t);
    assert_int_equal(atomic_load(&m->refs), 1);
    bus_msg_unref(m);
}

static void test_idmap_many(void **state)
{
    (void)state;
    bus_idmap m;
    bus_idmap_init(&m);
    assert_int_equal(bus_idmap_put(&m, 0, 1), HSB_EINVAL);
    for (uint64_t k = 1; k <= 5000; k++) {
        assert_int_equal(bus_idmap_put(&m, k * 7919, k), HSB_OK);
    }
    for (uint64_t k = 1; k <= 5000; k += 2) {
        assert_true(bus_idmap_del(&m, k * 7919));
    }
    assert_int_equal(m.len, 2500);
    for (uint64_t k = 1; k <= 5000; k++) {
        uint64_t v = 0;
        bool found = bus_idmap_get(&m, k * 7919, &v);
        assert_int_equal(found, k % 2 == 0);
        if (found) {
            assert_int_equal(v, k);
        }
    }
    bus_idmap_fini(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_inflight_add_take),
        cmocka_unit_test(test_inflight_fini_drops_refs),
        cmocka_unit_test(test_idmap_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
