/*
 * tests/unit/test_proto_ctl.c - control protocol: {cmd, args} requests and {ok, data | err, msg}
 * replies. Round trips, and one test per rejection path with its exact code and key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "proto/codec.h"

typedef struct fixture {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    hsb_dec dec;
} fixture;

static int setup(void **state)
{
    static fixture f;

    msgpack_sbuffer_init(&f.sb);
    msgpack_packer_init(&f.pk, &f.sb, msgpack_sbuffer_write);
    if (hsb_dec_init(&f.dec) != HSB_OK) {
        return -1;
    }
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;

    msgpack_sbuffer_destroy(&f->sb);
    hsb_dec_fini(&f->dec);
    return 0;
}

static void pk_s(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

static hsb_err dec_req(fixture *f, hsb_ctl_request *req)
{
    return hsb_dec_ctl_request(&f->dec, f->sb.data, f->sb.size, req);
}

static hsb_err dec_rep(fixture *f, hsb_ctl_reply *rep)
{
    return hsb_dec_ctl_reply(&f->dec, f->sb.data, f->sb.size, rep);
}

static void test_request_roundtrip(void **state)
{
    fixture *f = *state;
    hsb_ctl_request in, out;

    memset(&in, 0, sizeof(in));
    strcpy(in.cmd, "breaker");
    in.args[0] = "open";
    in.args[1] = "echo";
    in.args[2] = "";
    in.n_args = 3;
    assert_int_equal(hsb_enc_ctl_request(&f->pk, &in), HSB_OK);
    assert_int_equal(dec_req(f, &out), HSB_OK);
    memset(f->sb.data, 0, f->sb.size); /* the decoded strings must be copies */
    assert_string_equal(out.cmd, "breaker");
    assert_int_equal(out.n_args, 3);
    assert_string_equal(out.args[0], "open");
    assert_string_equal(out.args[1], "echo");
    assert_string_equal(out.args[2], "");
}

static void test_request_no_args(void **state)
{
    fixture *f = *state;
    hsb_ctl_request in, out;

    memset(&in, 0, sizeof(in));
    strcpy(in.cmd, "log-level");
    assert_int_equal(hsb_enc_ctl_request(&f->pk, &in), HSB_OK);
    assert_int_equal(dec_req(f, &out), HSB_OK);
    assert_string_equal(out.cmd, "log-level");
    assert_int_equal(out.n_args, 0);
}

static void test_reply_ok_roundtrip(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;
    msgpack_object_kv *kv;

    assert_int_equal(hsb_enc_ctl_reply_ok_begin(&f->pk), HSB_OK);
    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "agents");
    msgpack_pack_array(&f->pk, 2);
    pk_s(&f->pk, "echo");
    pk_s(&f->pk, "consent");
    pk_s(&f->pk, "blob");
    msgpack_pack_bin_with_body(&f->pk, "\x01\x02", 2);
    assert_int_equal(dec_rep(f, &rep), HSB_OK);
    memset(f->sb.data, 0, f->sb.size); /* data must not point into the input */
    assert_true(rep.ok);
    assert_int_equal(rep.err, HSB_OK);
    assert_null(rep.msg);
    assert_int_equal(rep.data.type, MSGPACK_OBJECT_MAP);
    assert_int_equal(rep.data.via.map.size, 2);
    kv = rep.data.via.map.ptr;
    assert_int_equal(kv[0].key.via.str.size, 6);
    assert_memory_equal(kv[0].key.via.str.ptr, "agents", 6);
    assert_int_equal(kv[0].val.via.array.size, 2);
    assert_memory_equal(kv[0].val.via.array.ptr[1].via.str.ptr, "consent", 7);
    assert_int_equal(kv[1].val.type, MSGPACK_OBJECT_BIN);
    assert_memory_equal(kv[1].val.via.bin.ptr, "\x01\x02", 2);
}

static void test_reply_ok_without_data(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "ok");
    msgpack_pack_true(&f->pk);
    assert_int_equal(dec_rep(f, &rep), HSB_OK);
    assert_true(rep.ok);
    assert_int_equal(rep.data.type, MSGPACK_OBJECT_NIL);
}

static void test_reply_err_roundtrip(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    assert_int_equal(hsb_enc_ctl_reply_err(&f->pk, HSB_ENOTFOUND, "no agent named x"), HSB_OK);
    assert_int_equal(dec_rep(f, &rep), HSB_OK);
    assert_false(rep.ok);
    assert_int_equal(rep.err, HSB_EINTERNAL); /* local codes travel as E_INTERNAL */
    assert_string_equal(rep.msg, "no agent named x");

    msgpack_sbuffer_clear(&f->sb);
    assert_int_equal(hsb_enc_ctl_reply_err(&f->pk, HSB_EBADOP, NULL), HSB_OK);
    assert_int_equal(dec_rep(f, &rep), HSB_OK);
    assert_int_equal(rep.err, HSB_EBADMSG);
    assert_null(rep.msg);
}

static void expect(fixture *f, hsb_err got, hsb_err want, const char *msg)
{
    if (got != want || strcmp(hsb_dec_errmsg(&f->dec), msg) != 0) {
        print_error("got %s \"%s\", want %s \"%s\"\n", hsb_err_name(got), hsb_dec_errmsg(&f->dec),
                    hsb_err_name(want), msg);
    }
    assert_int_equal(got, want);
    assert_string_equal(hsb_dec_errmsg(&f->dec), msg);
}

static void test_reject_missing_cmd(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "args");
    msgpack_pack_array(&f->pk, 0);
    expect(f, dec_req(f, &req), HSB_EMISSING, "cmd: is required");
}

static void test_reject_cmd_type(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "cmd");
    msgpack_pack_uint8(&f->pk, 3);
    expect(f, dec_req(f, &req), HSB_ETYPE, "cmd: must be a string");
}

static void test_reject_cmd_name(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "Status");
    expect(f, dec_req(f, &req), HSB_EBADOP, "cmd: must match [a-z-]{1,32}");

    msgpack_sbuffer_clear(&f->sb);
    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "abcdefghijklmnopqrstuvwxyzabcdefg"); /* 33 */
    expect(f, dec_req(f, &req), HSB_EBADOP, "cmd: must match [a-z-]{1,32}");

    msgpack_sbuffer_clear(&f->sb);
    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "");
    expect(f, dec_req(f, &req), HSB_EBADOP, "cmd: must match [a-z-]{1,32}");
}

static void test_reject_cmd_utf8(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "cmd");
    msgpack_pack_str_with_body(&f->pk, "st\xe0\x80\x80", 5);
    expect(f, dec_req(f, &req), HSB_EUTF8, "cmd: string is not valid UTF-8");
}

static void test_reject_args_type(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "drain");
    pk_s(&f->pk, "args");
    pk_s(&f->pk, "now");
    expect(f, dec_req(f, &req), HSB_ETYPE, "args: must be an array of strings");

    msgpack_sbuffer_clear(&f->sb);
    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "drain");
    pk_s(&f->pk, "args");
    msgpack_pack_array(&f->pk, 2);
    pk_s(&f->pk, "ok");
    msgpack_pack_int8(&f->pk, -1);
    expect(f, dec_req(f, &req), HSB_ETYPE, "args[1]: must be a string");
}

static void test_reject_too_many_args(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;
    int i;

    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "dlq");
    pk_s(&f->pk, "args");
    msgpack_pack_array(&f->pk, HSB_CTL_ARGS_MAX + 1);
    for (i = 0; i <= HSB_CTL_ARGS_MAX; i++) {
        pk_s(&f->pk, "x");
    }
    expect(f, dec_req(f, &req), HSB_ETOOBIG, "args: 17 arguments, over the limit of 16");
}

static void test_reject_long_arg(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;
    char arg[258];

    memset(arg, 'a', 257);
    arg[257] = '\0';
    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "dlq");
    pk_s(&f->pk, "args");
    msgpack_pack_array(&f->pk, 2);
    pk_s(&f->pk, "list");
    pk_s(&f->pk, arg);
    expect(f, dec_req(f, &req), HSB_ERANGE, "args[1]: must be 0..256 bytes long");
}

static void test_reject_arg_utf8(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "dlq");
    pk_s(&f->pk, "args");
    msgpack_pack_array(&f->pk, 1);
    msgpack_pack_str_with_body(&f->pk, "\xed\xb0\x80", 3);
    expect(f, dec_req(f, &req), HSB_EUTF8, "args[0]: string is not valid UTF-8");
}

static void test_reject_request_not_map(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    pk_s(&f->pk, "status");
    expect(f, dec_req(f, &req), HSB_EBADMSG, "message: must be a map");
}

static void test_reject_request_truncated_and_trailing(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;
    size_t n, full;

    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "breaker");
    pk_s(&f->pk, "args");
    msgpack_pack_array(&f->pk, 2);
    pk_s(&f->pk, "reset");
    pk_s(&f->pk, "echo");
    full = f->sb.size;
    for (n = 0; n < full; n++) {
        assert_int_equal(hsb_dec_ctl_request(&f->dec, f->sb.data, n, &req), HSB_ETRUNC);
    }
    msgpack_pack_nil(&f->pk);
    expect(f, dec_req(f, &req), HSB_ETRAILING, "message: 1 bytes follow the message");
}

static void test_reject_reply_missing_ok(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "data");
    msgpack_pack_nil(&f->pk);
    expect(f, dec_rep(f, &rep), HSB_EMISSING, "ok: is required");
}

static void test_reject_reply_ok_type(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "ok");
    pk_s(&f->pk, "yes");
    expect(f, dec_rep(f, &rep), HSB_ETYPE, "ok: must be a boolean");
}

static void test_reject_reply_missing_err(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "ok");
    msgpack_pack_false(&f->pk);
    pk_s(&f->pk, "msg");
    pk_s(&f->pk, "oops");
    expect(f, dec_rep(f, &rep), HSB_EMISSING, "err: is required when ok is false");
}

static void test_reject_reply_err_type(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    msgpack_pack_map(&f->pk, 2);
    pk_s(&f->pk, "ok");
    msgpack_pack_false(&f->pk);
    pk_s(&f->pk, "err");
    msgpack_pack_uint8(&f->pk, 5);
    expect(f, dec_rep(f, &rep), HSB_ETYPE, "err: must be a string");
}

static void test_reject_reply_data_utf8(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;

    assert_int_equal(hsb_enc_ctl_reply_ok_begin(&f->pk), HSB_OK);
    msgpack_pack_map(&f->pk, 1);
    pk_s(&f->pk, "name");
    msgpack_pack_str_with_body(&f->pk, "\xf8", 1);
    expect(f, dec_rep(f, &rep), HSB_EUTF8, "data.name: string is not valid UTF-8");
}

static void test_reject_reply_data_depth(void **state)
{
    fixture *f = *state;
    hsb_ctl_reply rep;
    int i;

    assert_int_equal(hsb_enc_ctl_reply_ok_begin(&f->pk), HSB_OK);
    for (i = 0; i < 16; i++) { /* data at depth 2: 16 arrays reach depth 17 */
        msgpack_pack_array(&f->pk, 1);
    }
    msgpack_pack_nil(&f->pk);
    assert_int_equal(dec_rep(f, &rep), HSB_EDEPTH);
    assert_non_null(strstr(hsb_dec_errmsg(&f->dec), "data[0]"));
}

static void test_unknown_keys_ignored(void **state)
{
    fixture *f = *state;
    hsb_ctl_request req;

    msgpack_pack_map(&f->pk, 3);
    pk_s(&f->pk, "cmd");
    pk_s(&f->pk, "status");
    pk_s(&f->pk, "format");
    pk_s(&f->pk, "json");
    pk_s(&f->pk, "v");
    msgpack_pack_uint8(&f->pk, 9);
    assert_int_equal(dec_req(f, &req), HSB_OK);
    assert_string_equal(req.cmd, "status");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_request_roundtrip),
        T(test_request_no_args),
        T(test_reply_ok_roundtrip),
        T(test_reply_ok_without_data),
        T(test_reply_err_roundtrip),
        T(test_reject_missing_cmd),
        T(test_reject_cmd_type),
        T(test_reject_cmd_name),
        T(test_reject_cmd_utf8),
        T(test_reject_args_type),
        T(test_reject_too_many_args),
        T(test_reject_long_arg),
        T(test_reject_arg_utf8),
        T(test_reject_request_not_map),
        T(test_reject_request_truncated_and_trailing),
        T(test_reject_reply_missing_ok),
        T(test_reject_reply_ok_type),
        T(test_reject_reply_missing_err),
        T(test_reject_reply_err_type),
        T(test_reject_reply_data_utf8),
        T(test_reject_reply_data_depth),
        T(test_unknown_keys_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
