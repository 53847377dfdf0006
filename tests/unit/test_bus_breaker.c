/* Unit tests for bus/breaker.c: the state machine on its own, with explicit times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/breaker.h"

static bus_breaker_config cfg_default(void)
{
    bus_breaker_config c = {
        .failure_threshold = 3,
        .window_ms = 10000,
        .rate_min_calls = 10,
        .rate_threshold_pct = 50,
        .recovery_timeout_ms = 1000,
        .half_open_probes = 1,
    };
    return c;
}

static void test_breaker_opens_on_consecutive(void **state)
{
    (void)state;
    bus_breaker_config c = cfg_default();
    bus_breaker br;
    bus_breaker_init(&br, &c);
    bus_breaker_transition t;
    assert_false(bus_breaker_record(&br, 100, false, &t));
    assert_false(bus_breaker_record(&br, 101, false, &t));
    assert_false(bus_breaker_record(&br, 102, true, &t)); /* a success resets the run */
    assert_false(bus_breaker_record(&br, 103, false, &t));
    assert_false(bus_breaker_record(&br, 104, false, &t));
    assert_true(bus_breaker_record(&br, 105, false, &t));
    assert_int_equal(t.from, BUS_BREAKER_CLOSED);
    assert_int_equal(t.to, BUS_BREAKER_OPEN);
    assert_string_equal(t.reason, "consecutive_failures");
    assert_int_equal(br.state, BUS_BREAKER_OPEN);
    assert_int_equal(br.opened_at_ms, 105);
    assert_int_equal(bus_breaker_recovery_at(&br), 1105);
    assert_false(bus_breaker_admit(&br)); /* fail fast */
    assert_false(bus_breaker_may_deliver(&br, 0));
}

static void test_breaker_opens_on_rate(void **state)
{
    (void)state;
    bus_breaker_config c = cfg_default();
    c.failure_threshold = 0; /* rate only */
    bus_breaker br;
    bus_breaker_init(&br, &c);
    bus_breaker_transition t;
    /* Alternate: 50% failures, never two in a row. Under min calls nothing happens. */
    bool opened = false;
    int calls = 0;
    for (int i = 0; i < 20 && !opened; i++) {
        opened = bus_breaker_record(&br, 1000 + (uint64_t)i, i % 2 == 1, &t);
        calls++;
    }
    assert_true(opened);
    assert_int_equal(calls, 11); /* at 10 calls 5 failed but the 10th succeeded; the 11th fails */
    assert_string_equal(t.reason, "failure_rate");
}

static void test_breaker_rate_window_forgets(void **state)
{
    (void)state;
    bus_breaker_config c = cfg_default();
    c.failure_threshold = 0;
    bus_breaker br;
    bus_breaker_init(&br, &c);
    bus_breaker_transition t;
    for (int i = 0; i < 9; i++) {
        assert_false(bus_breaker_record(&br, 1000, false, &t));
    }
    /* Twenty seconds later the old failures are outside the window. */
    uint32_t calls, fails;
    bus_breaker_window(&br, 21000, &calls, &fails);
    assert_int_equal(calls, 0);
    for (int i = 0; i < 9; i++) {
        assert_false(bus_breaker_record(&br, 21000, true, &t));
    }
    assert_false(bus_breaker_record(&br, 21000, false, &t));
    assert_int_equal(br.state, BUS_BREAKER_CLOSED);
}

static void test_breaker_half_open_probe_success_closes(void **state)
{
    (void)state;
    bus_breaker_config c = cfg_default();
    bus_breaker br;
    bus_breaker_init(&br, &c);
    bus_breaker_transition t;
    for (int i = 0; i < 3; i++) {
        bus_breaker_record(&br, 0, false, &t);
    }
    assert_int_equal(br.state, BUS_BREAKER_OPEN);
    assert_false(bus_breaker_poll(&br, 999, &t));
    assert_true(bus_breaker_poll(&br, 1001, &t));
    assert_int_equal(t.to, BUS_BREAKER_HALF_OPEN);
    assert_true(bus_breaker_admit(&br));  /* one probe */
    assert_false(bus_breaker_admit(&br)); /* and no more */
    assert_true(bus_breaker_may_deliver(&br, 0));
    assert_false(bus_breaker_may_deliver(&br, 1));
    assert_true(bus_breaker_record(&br, 1002, true, &t));
    assert_int_equal(t.from, BUS_BREAKER_HALF_OPEN);
    assert_int_equal(t.to, BUS_BREAKER_CLOSED);
    assert_int_equal(br.consecutive, 0);
    assert_int_equal(br.transitions, 3);
}

static void test_breaker_half_open_probe_failure_reopens(void **state)
{
    (void)state;
    bus_breaker_config c = cfg_default();
    bus_breaker br;
    bus_breaker_init(&br, &c);
    bus_breaker_transition t;
    for (int i = 0; i < 3; i++) {
        bus_breaker_record(&br, 5, false, &t);
    }
    assert_true(bus_breaker_poll(&br, 1005, &t));
    assert_true(bus_breaker_record(&br, 1500, false, &t));
    assert_int_equal(t.to, BUS_BREAKER_OPEN);
    assert_string_equal(t.reason, "probe_failed");
    assert_int_equal(bus_breaker_recovery_at(&br), 2500);
}

static void test_breaker_forced(void **state)
{
    (void)state;
    bus_breaker_config c = cfg_default();
    bus_breaker br;
    bus_breaker_init(&br, &c);
    bus_breaker_transition t;
    assert_true(bus_breaker_operate(&br, BUS_BREAKER_FORCE_OPEN, 10, &t));
    assert_int_equal(br.state, BUS_BREAKER_OPEN);
    assert_true(br.forced);
    assert_int_equal(bus_breaker_recovery_at(&br), 0); /* stays open */
    assert_false(bus_breaker_poll(&br, 1000000, &t));
    assert_true(bus_breaker_operate(&br, BUS_BREAKER_FORCE_CLOSE, 20, &t));
    for (int i = 0; i < 10; i++) {
        assert_false(bus_breaker_record(&br, 30, false, &t)); /* forced closed holds */
    }
    assert_int_equal(br.state, BUS_BREAKER_CLOSED);
    assert_false(bus_breaker_operate(&br, BUS_BREAKER_RESET, 40, &t)); /* already closed */
    assert_false(br.forced);
    assert_int_equal(br.consecutive, 0);
    for (int i = 0; i < 3; i++) {
        bus_breaker_record(&br, 50, false, &t);
    }
    assert_int_equal(br.state, BUS_BREAKER_OPEN); /* normal again */
    assert_true(bus_breaker_operate(&br, BUS_BREAKER_RESET, 60, &t));
    assert_int_equal(t.to, BUS_BREAKER_CLOSED);
    assert_string_equal(t.reason, "reset");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_opens_on_consecutive),
        cmocka_unit_test(test_breaker_opens_on_rate),
        cmocka_unit_test(test_breaker_rate_window_forgets),
        cmocka_unit_test(test_breaker_half_open_probe_success_closes),
        cmocka_unit_test(test_breaker_half_open_probe_failure_reopens),
        cmocka_unit_test(test_breaker_forced),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
