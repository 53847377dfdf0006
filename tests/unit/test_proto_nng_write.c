/*
 * tests/unit/test_proto_nng_write.c - the msgpack writer that packs into an nng_msg
 * (proto/nng_write.h): the bytes match msgpack-c's own buffer whether the size estimate is exact,
 * short or zero, and an aborted packing frees its message (ASan and valgrind see a leak).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/nng_write.h"

/* pack_sample packs n small integers, a short string and a bin of bin_len bytes. */
static void pack_sample(msgpack_packer *pk, size_t n, size_t bin_len)
{
    static char bin[20000];

    memset(bin, 0x5a, sizeof(bin));
    msgpack_pack_array(pk, (uint32_t)n + 2);
    for (size_t i = 0; i < n; i++) {
        msgpack_pack_uint64(pk, i * 977);
    }
    msgpack_pack_str_with_body(pk, "consent.granted", 15);
    msgpack_pack_bin_with_body(pk, bin, bin_len);
}

/* check packs the sample through a writer sized hint and compares with msgpack_sbuffer. */
static void check(size_t hint, size_t n, size_t bin_len)
{
    msgpack_sbuffer ref;
    msgpack_packer pk;
    hsb_nng_writer w;

    msgpack_sbuffer_init(&ref);
    msgpack_packer_init(&pk, &ref, msgpack_sbuffer_write);
    pack_sample(&pk, n, bin_len);

    assert_int_equal(hsb_nng_writer_begin(&w, &pk, hint), 0);
    pack_sample(&pk, n, bin_len);
    nng_msg *m = hsb_nng_writer_end(&w);
    assert_null(w.m); /* handed over */
    assert_int_equal(nng_msg_len(m), ref.size);
    assert_memory_equal(nng_msg_body(m), ref.data, ref.size);
    nng_msg_free(m);
    msgpack_sbuffer_destroy(&ref);
}

static void test_exact_estimate(void **state)
{
    msgpack_sbuffer ref;
    msgpack_packer pk;

    (void)state;
    msgpack_sbuffer_init(&ref);
    msgpack_packer_init(&pk, &ref, msgpack_sbuffer_write);
    pack_sample(&pk, 64, 256);
    check(ref.size, 64, 256);
    msgpack_sbuffer_destroy(&ref);
}

static void test_generous_estimate_is_trimmed(void **state)
{
    (void)state;
    check(1 << 16, 3, 10);
}

static void test_short_estimate_grows(void **state)
{
    (void)state;
    check(0, 1000, 300);
    check(5, 200, 0);
    check(300, 64, 256);
}

/* One piece bigger than the doubled body: the body grows to fit it at once. */
static void test_piece_larger_than_doubling(void **state)
{
    (void)state;
    check(8, 0, 20000);
}

static void test_abort_frees(void **state)
{
    msgpack_packer pk;
    hsb_nng_writer w;

    (void)state;
    assert_int_equal(hsb_nng_writer_begin(&w, &pk, 16), 0);
    pack_sample(&pk, 100, 1000);
    hsb_nng_writer_abort(&w);
    assert_null(w.m);
    hsb_nng_writer_abort(&w); /* a second abort is harmless */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_estimate),
        cmocka_unit_test(test_generous_estimate_is_trimmed),
        cmocka_unit_test(test_short_estimate_grows),
        cmocka_unit_test(test_piece_larger_than_doubling),
        cmocka_unit_test(test_abort_frees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
