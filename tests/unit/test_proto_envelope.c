/*
 * tests/unit/test_proto_envelope.c - envelope defaults, names, patterns and UTF-8 validation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/envelope.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static void test_init_defaults(void **state)
{
    hsb_envelope env;

    memset(&env, 0xab, sizeof(env));
    hsb_envelope_init(&env);
    assert_int_equal(env.prio, HSB_PRIO_NORMAL);
    assert_int_equal(env.id, 0);
    assert_int_equal(env.corr, 0);
    assert_int_equal(env.deadline, 0);
    assert_int_equal(env.ttl_ms, 0);
    assert_int_equal(env.deliveries, 0);
    assert_false(env.durable);
    assert_string_equal(env.to, "");
    assert_string_equal(env.cid, "");
    assert_null(env.body);
    assert_int_equal(env.body_len, 0);
}

static void test_names(void **state)
{
    char max[HSB_NAME_MAX + 1];

    assert_true(hsb_name_valid(S("echo")));
    assert_true(hsb_name_valid(S("lab.result_v2-x")));
    assert_true(hsb_name_valid(S("0")));
    assert_true(hsb_name_valid(S("...")));
    assert_false(hsb_name_valid(S("")));
    assert_false(hsb_name_valid(S("Echo")));
    assert_false(hsb_name_valid(S("a b")));
    assert_false(hsb_name_valid(S("a/b")));
    assert_false(hsb_name_valid(S("lab.*")));
    assert_false(hsb_name_valid(S("caf\xc3\xa9")));
    assert_false(hsb_name_valid("a\0b", 3));
    memset(max, 'a', sizeof(max));
    assert_true(hsb_name_valid(max, HSB_NAME_MAX));
    assert_false(hsb_name_valid(max, HSB_NAME_MAX + 1));
}

static void test_patterns(void **state)
{
    char max[HSB_NAME_MAX + 2];

    assert_true(hsb_pattern_valid(S("lab.result")));
    assert_true(hsb_pattern_valid(S("lab.*")));
    assert_true(hsb_pattern_valid(S("a.b.*")));
    assert_false(hsb_pattern_valid(S(".*")));
    assert_false(hsb_pattern_valid(S("*")));
    assert_false(hsb_pattern_valid(S("lab*")));
    assert_false(hsb_pattern_valid(S("lab.*.x")));
    assert_false(hsb_pattern_valid(S("lab.**")));
    assert_false(hsb_pattern_valid(S("")));
    memset(max, 'a', HSB_NAME_MAX);
    max[HSB_NAME_MAX] = '.';
    max[HSB_NAME_MAX + 1] = '*';
    assert_true(hsb_pattern_valid(max, HSB_NAME_MAX + 2));
}

static void test_utf8_valid(void **state)
{
    assert_true(hsb_utf8_valid(S("")));
    assert_true(hsb_utf8_valid(S("plain ascii, longer than eight bytes")));
    assert_true(hsb_utf8_valid(S("caf\xc3\xa9")));      /* U+00E9 */
    assert_true(hsb_utf8_valid(S("\xe2\x82\xac")));     /* U+20AC */
    assert_true(hsb_utf8_valid(S("\xf0\x9f\x98\x80"))); /* U+1F600 */
    assert_true(hsb_utf8_valid(S("\xf4\x8f\xbf\xbf"))); /* U+10FFFF */
    assert_true(hsb_utf8_valid(S("\xed\x9f\xbf")));     /* U+D7FF */
    assert_true(hsb_utf8_valid(S("\xee\x80\x80")));     /* U+E000 */
    assert_true(hsb_utf8_valid(S("12345678\xc3\xa9"
                                 "abcdefgh"))); /* after the fast path */
    assert_true(hsb_utf8_valid("\0", 1));       /* NUL is a valid character */
}

static void test_utf8_invalid(void **state)
{
    assert_false(hsb_utf8_valid(S("\x80")));             /* lone continuation */
    assert_false(hsb_utf8_valid(S("\xc0\xaf")));         /* overlong '/' */
    assert_false(hsb_utf8_valid(S("\xc1\xbf")));         /* overlong */
    assert_false(hsb_utf8_valid(S("\xe0\x80\xaf")));     /* overlong, 3 bytes */
    assert_false(hsb_utf8_valid(S("\xf0\x80\x80\xaf"))); /* overlong, 4 bytes */
    assert_false(hsb_utf8_valid(S("\xed\xa0\x80")));     /* U+D800 surrogate */
    assert_false(hsb_utf8_valid(S("\xed\xbf\xbf")));     /* U+DFFF surrogate */
    assert_false(hsb_utf8_valid(S("\xf4\x90\x80\x80"))); /* U+110000 */
    assert_false(hsb_utf8_valid(S("\xf5\x80\x80\x80"))); /* lead beyond F4 */
    assert_false(hsb_utf8_valid(S("\xff")));
    assert_false(hsb_utf8_valid(S("\xc3")));         /* truncated, 2 bytes */
    assert_false(hsb_utf8_valid(S("\xe2\x82")));     /* truncated, 3 bytes */
    assert_false(hsb_utf8_valid(S("\xf0\x9f\x98"))); /* truncated, 4 bytes */
    assert_false(hsb_utf8_valid(S("abcdefgh\xc3"))); /* truncated after the fast path */
    assert_false(hsb_utf8_valid(S("\xc3\x28")));     /* bad continuation */
    assert_false(hsb_utf8_valid(S("\xe2\x28\xa1")));
    assert_false(hsb_utf8_valid(S("\xf0\x9f\x28\x80")));
}

/* Every one- and two-byte string agrees with a straightforward reference decoder. */
static bool ref_valid(const unsigned char *s, size_t len)
{
    size_t i = 0;

    while (i < len) {
        unsigned cp, n, k;
        if (s[i] < 0x80) {
            i++;
            continue;
        } else if ((s[i] & 0xe0) == 0xc0) {
            n = 1, cp = s[i] & 0x1f;
        } else if ((s[i] & 0xf0) == 0xe0) {
            n = 2, cp = s[i] & 0x0f;
        } else if ((s[i] & 0xf8) == 0xf0) {
            n = 3, cp = s[i] & 0x07;
        } else {
            return false;
        }
        if (i + n >= len) {
            return false;
        }
        for (k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

static void test_utf8_exhaustive_short(void **state)
{
    unsigned a, b, c;
    unsigned char s[3];

    for (a = 0; a < 256; a++) {
        s[0] = (unsigned char)a;
        assert_int_equal(hsb_utf8_valid((char *)s, 1), ref_valid(s, 1));
        for (b = 0; b < 256; b++) {
            s[1] = (unsigned char)b;
            assert_int_equal(hsb_utf8_valid((char *)s, 2), ref_valid(s, 2));
            if (a >= 0xe0 && a <= 0xf4) {
                for (c = 0x7f; c <= 0xc0; c++) {
                    s[2] = (unsigned char)c;
                    assert_int_equal(hsb_utf8_valid((char *)s, 3), ref_valid(s, 3));
                }
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_defaults), cmocka_unit_test(test_names),
        cmocka_unit_test(test_patterns),      cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_utf8_invalid),  cmocka_unit_test(test_utf8_exhaustive_short),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
