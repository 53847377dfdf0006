/* Unit tests for bus/dedup.c: first id wins, window, bound, keys by agent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "bus/dedup.h"

static void test_dedup_first_id_wins(void **state)
{
    (void)state;
    bus_dedup d;
    bus_dedup_init(&d, 1000, 100);
    uint64_t id = 0;
    assert_false(bus_dedup_find(&d, "lab", "c1", 0, &id));
    assert_int_equal(bus_dedup_add(&d, "lab", "c1", 42, 0), HSB_OK);
    assert_true(bus_dedup_find(&d, "lab", "c1", 10, &id));
    assert_int_equal(id, 42);
    /* Same cid from another agent is another key. */
    assert_false(bus_dedup_find(&d, "portal", "c1", 10, &id));
    bus_dedup_fini(&d);
}

static void test_dedup_window(void **state)
{
    (void)state;
    bus_dedup d;
    bus_dedup_init(&d, 1000, 100);
    uint64_t id;
    bus_dedup_add(&d, "lab", "c1", 1, 100);
    assert_true(bus_dedup_find(&d, "lab", "c1", 1099, &id));
    assert_false(bus_dedup_find(&d, "lab", "c1", 1100, &id));
    bus_dedup_expire(&d, 1100);
    assert_int_equal(bus_dedup_len(&d), 0);
    /* After the window the key may be used again with a new id. */
    bus_dedup_add(&d, "lab", "c1", 2, 1200);
    assert_true(bus_dedup_find(&d, "lab", "c1", 1300, &id));
    assert_int_equal(id, 2);
    bus_dedup_fini(&d);
}

static void test_dedup_bounded(void **state)
{
    (void)state;
    bus_dedup d;
    bus_dedup_init(&d, 100000, 50);
    char cid[32];
    for (int i = 0; i < 200; i++) {
        snprintf(cid, sizeof(cid), "c%d", i);
        assert_int_equal(bus_dedup_add(&d, "lab", cid, (uint64_t)i + 1, (uint64_t)i), HSB_OK);
    }
    assert_int_equal(bus_dedup_len(&d), 50);
    uint64_t id;
    assert_false(bus_dedup_find(&d, "lab", "c0", 300, &id));   /* evicted */
    assert_false(bus_dedup_find(&d, "lab", "c149", 300, &id)); /* evicted */
    assert_true(bus_dedup_find(&d, "lab", "c150", 300, &id));  /* oldest kept */
    assert_int_equal(id, 151);
    assert_true(bus_dedup_find(&d, "lab", "c199", 300, &id));
    assert_int_equal(id, 200);
    bus_dedup_fini(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedup_first_id_wins),
        cmocka_unit_test(test_dedup_window),
        cmocka_unit_test(test_dedup_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
