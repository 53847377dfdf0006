/* Unit tests for bus/hist.c: bucket placement and quantile estimates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/hist.h"

static void test_hist_bounds_increase(void **state)
{
    (void)state;
    for (int i = 1; i < BUS_HIST_BUCKETS; i++) {
        assert_true(bus_hist_bounds_us[i] > bus_hist_bounds_us[i - 1]);
    }
}

static void test_hist_record_buckets(void **state)
{
    (void)state;
    bus_hist h;
    memset(&h, 0, sizeof(h));
    bus_hist_record(&h, 0);        /* first bucket */
    bus_hist_record(&h, 100);      /* on the bound: still the first */
    bus_hist_record(&h, 101);      /* second */
    bus_hist_record(&h, 99999999); /* +Inf */
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[BUS_HIST_BUCKETS], 1);
    assert_int_equal(h.count, 4);
    assert_int_equal(h.sum_us, 0 + 100 + 101 + 99999999);
}

static void test_hist_quantile(void **state)
{
    (void)state;
    bus_hist h;
    memset(&h, 0, sizeof(h));
    assert_int_equal(bus_hist_quantile(&h, 0.5), 0);
    for (int i = 0; i < 90; i++) {
        bus_hist_record(&h, 800); /* (500, 1000] */
    }
    for (int i = 0; i < 10; i++) {
        bus_hist_record(&h, 40000); /* (25000, 50000] */
    }
    uint64_t p50 = bus_hist_quantile(&h, 0.5);
    uint64_t p99 = bus_hist_quantile(&h, 0.99);
    assert_true(p50 > 500 && p50 <= 1000);
    assert_true(p99 > 25000 && p99 <= 50000);
    assert_true(bus_hist_quantile(&h, 1.0) <= 50000);
    assert_true(bus_hist_quantile(&h, 0.0) <= 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_bounds_increase),
        cmocka_unit_test(test_hist_record_buckets),
        cmocka_unit_test(test_hist_quantile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
