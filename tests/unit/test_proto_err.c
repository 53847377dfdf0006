/*
 * tests/unit/test_proto_err.c - the error table: wire strings, C names, descriptions, and the
 * mapping back from the wire.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/err.h"

static const char *const wire_names[] = {
    "E_BADMSG", "E_TOOBIG", "E_NOROUTE",   "E_EXPIRED",  "E_BUSY",     "E_BREAKER_OPEN",
    "E_AUTH",   "E_DENIED", "E_DUPLICATE", "E_SHUTDOWN", "E_INTERNAL",
};

static void test_ok_has_no_wire_name(void **state)
{
    assert_null(hsb_err_wire(HSB_OK));
    assert_string_equal(hsb_err_name(HSB_OK), "HSB_OK");
}

static void test_malformed_family_is_badmsg(void **state)
{
    hsb_err e;

    for (e = HSB_EBADMSG; e <= HSB_ERANGE; e++) {
        assert_string_equal(hsb_err_wire(e), "E_BADMSG");
    }
    assert_string_equal(hsb_err_wire(HSB_ETOOBIG), "E_TOOBIG");
}

static void test_own_wire_names(void **state)
{
    assert_string_equal(hsb_err_wire(HSB_ENOROUTE), "E_NOROUTE");
    assert_string_equal(hsb_err_wire(HSB_EEXPIRED), "E_EXPIRED");
    assert_string_equal(hsb_err_wire(HSB_EBUSY), "E_BUSY");
    assert_string_equal(hsb_err_wire(HSB_EBREAKER_OPEN), "E_BREAKER_OPEN");
    assert_string_equal(hsb_err_wire(HSB_EAUTH), "E_AUTH");
    assert_string_equal(hsb_err_wire(HSB_EDENIED), "E_DENIED");
    assert_string_equal(hsb_err_wire(HSB_EDUPLICATE), "E_DUPLICATE");
    assert_string_equal(hsb_err_wire(HSB_ESHUTDOWN), "E_SHUTDOWN");
    assert_string_equal(hsb_err_wire(HSB_EINTERNAL), "E_INTERNAL");
}

static void test_local_codes_are_internal(void **state)
{
    hsb_err e;

    for (e = HSB_ENOMEM; e < HSB_ERR_COUNT; e++) {
        assert_string_equal(hsb_err_wire(e), "E_INTERNAL");
    }
    assert_string_equal(hsb_err_wire(HSB_EDURABLE), "E_INTERNAL");
    assert_string_equal(hsb_err_wire((hsb_err)999), "E_INTERNAL");
}

static void test_every_wire_name_round_trips(void **state)
{
    size_t i;

    for (i = 0; i < sizeof(wire_names) / sizeof(wire_names[0]); i++) {
        hsb_err e = hsb_err_from_wire(wire_names[i], strlen(wire_names[i]));
        assert_int_not_equal(e, HSB_OK);
        assert_string_equal(hsb_err_wire(e), wire_names[i]);
    }
    assert_int_equal(hsb_err_from_wire("E_BADMSG", 8), HSB_EBADMSG);
    assert_int_equal(hsb_err_from_wire("E_TOOBIG", 8), HSB_ETOOBIG);
    assert_int_equal(hsb_err_from_wire("E_BREAKER_OPEN", 14), HSB_EBREAKER_OPEN);
}

static void test_from_wire_unknown_and_prefixes(void **state)
{
    assert_int_equal(hsb_err_from_wire("E_NEW", 5), HSB_EINTERNAL);
    assert_int_equal(hsb_err_from_wire("", 0), HSB_EINTERNAL);
    assert_int_equal(hsb_err_from_wire(NULL, 0), HSB_EINTERNAL);
    /* Length-delimited: a prefix or a longer string is not a match. */
    assert_int_equal(hsb_err_from_wire("E_BUSY", 5), HSB_EINTERNAL);
    assert_int_equal(hsb_err_from_wire("E_BUSYX", 7), HSB_EINTERNAL);
    assert_int_equal(hsb_err_from_wire("E_BUSYX", 6), HSB_EBUSY);
    assert_int_equal(hsb_err_from_wire("HSB_OK", 6), HSB_EINTERNAL);
}

static void test_names_and_descriptions(void **state)
{
    hsb_err e;

    for (e = HSB_OK; e < HSB_ERR_COUNT; e++) {
        assert_non_null(hsb_err_name(e));
        assert_memory_equal(hsb_err_name(e), "HSB_", 4);
        assert_non_null(hsb_strerror(e));
        assert_true(strlen(hsb_strerror(e)) > 0);
    }
    assert_string_equal(hsb_err_name(HSB_ETYPE), "HSB_ETYPE");
    assert_string_equal(hsb_err_name(HSB_EBREAKER_OPEN), "HSB_EBREAKER_OPEN");
    assert_string_equal(hsb_err_name(HSB_EDURABLE), "HSB_EDURABLE");
    assert_string_equal(hsb_strerror(HSB_EBUSY), "destination queue is full");
    assert_string_equal(hsb_strerror((hsb_err)-1), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ok_has_no_wire_name),
        cmocka_unit_test(test_malformed_family_is_badmsg),
        cmocka_unit_test(test_own_wire_names),
        cmocka_unit_test(test_local_codes_are_internal),
        cmocka_unit_test(test_every_wire_name_round_trips),
        cmocka_unit_test(test_from_wire_unknown_and_prefixes),
        cmocka_unit_test(test_names_and_descriptions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
