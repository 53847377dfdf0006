/* Unit tests for bus/router.c: type patterns, topics, the reply map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "bus/router.h"

static int agent_a, agent_b, agent_c;

static void test_router_type_exact_and_prefix(void **state)
{
    (void)state;
    bus_router r;
    bus_router_init(&r, 16);
    assert_int_equal(bus_router_add_type(&r, "lab.*", &agent_a), HSB_OK);
    assert_int_equal(bus_router_add_type(&r, "lab.result.*", &agent_b), HSB_OK);
    assert_int_equal(bus_router_add_type(&r, "lab.result.final", &agent_c), HSB_OK);
    assert_ptr_equal(bus_router_match_type(&r, "lab.order"), &agent_a);
    assert_ptr_equal(bus_router_match_type(&r, "lab.result.partial"), &agent_b); /* longest */
    assert_ptr_equal(bus_router_match_type(&r, "lab.result.final"), &agent_c);   /* exact */
    assert_null(bus_router_match_type(&r, "lab"));  /* the prefix needs something after it */
    assert_null(bus_router_match_type(&r, "labx")); /* and its dot */
    assert_null(bus_router_match_type(&r, "consent.check"));
    assert_int_equal(bus_router_add_type(&r, "Bad", &agent_a), HSB_EBADNAME);
    assert_int_equal(bus_router_add_type(&r, "*", &agent_a), HSB_EBADNAME);
    bus_router_fini(&r);
}

static void test_router_routes_are_counted(void **state)
{
    (void)state;
    bus_router r;
    bus_router_init(&r, 16);
    /* Two instances of one agent declare the same type; the route lives until both go. */
    bus_router_add_type(&r, "echo.ping", &agent_a);
    bus_router_add_type(&r, "echo.ping", &agent_a);
    bus_router_del_type(&r, "echo.ping", &agent_a);
    assert_ptr_equal(bus_router_match_type(&r, "echo.ping"), &agent_a);
    bus_router_del_type(&r, "echo.ping", &agent_a);
    assert_null(bus_router_match_type(&r, "echo.ping"));
    bus_router_fini(&r);
}

static void test_router_topic_fanout(void **state)
{
    (void)state;
    bus_router r;
    bus_router_init(&r, 16);
    bus_router_add_topic(&r, "sys.breaker", &agent_a);
    bus_router_add_topic(&r, "sys.*", &agent_a); /* the same agent twice: counted once */
    bus_router_add_topic(&r, "sys.breaker", &agent_b);
    bus_router_add_topic(&r, "audit", &agent_c);
    void *out[4];
    size_t n = bus_router_match_topic(&r, "sys.breaker", out, 4);
    assert_int_equal(n, 2);
    assert_ptr_equal(out[0], &agent_a);
    assert_ptr_equal(out[1], &agent_b);
    assert_int_equal(bus_router_match_topic(&r, "sys.alerts", out, 4), 1);
    assert_int_equal(bus_router_match_topic(&r, "nothing", out, 4), 0);
    /* Counting works with no room. */
    assert_int_equal(bus_router_match_topic(&r, "sys.breaker", NULL, 0), 2);
    bus_router_fini(&r);
}

static void test_router_reply_map(void **state)
{
    (void)state;
    bus_router r;
    bus_router_init(&r, 4);
    uint64_t session;
    void *agent;
    assert_int_equal(bus_router_reply_add(&r, 10, 7, &agent_a, 1000), HSB_OK);
    assert_true(bus_router_reply_find(&r, 10, 999, &session, &agent));
    assert_int_equal(session, 7);
    assert_ptr_equal(agent, &agent_a);
    assert_false(bus_router_reply_find(&r, 10, 1000, &session, &agent)); /* past deadline */
    assert_false(bus_router_reply_find(&r, 11, 0, &session, &agent));
    /* Bounded: the oldest goes first. */
    for (uint64_t id = 11; id <= 14; id++) {
        bus_router_reply_add(&r, id, id, &agent_b, 5000);
    }
    assert_false(bus_router_reply_find(&r, 10, 0, &session, &agent));
    assert_true(bus_router_reply_find(&r, 11, 0, &session, &agent));
    bus_router_reply_forget(&r, 12);
    assert_false(bus_router_reply_find(&r, 12, 0, &session, &agent));
    bus_router_reply_add(&r, 15, 15, &agent_b, 5000); /* evicts 11 */
    assert_false(bus_router_reply_find(&r, 11, 0, &session, &agent));
    assert_true(bus_router_reply_find(&r, 15, 0, &session, &agent));
    bus_router_fini(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router_type_exact_and_prefix),
        cmocka_unit_test(test_router_routes_are_counted),
        cmocka_unit_test(test_router_topic_fanout),
        cmocka_unit_test(test_router_reply_map),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
