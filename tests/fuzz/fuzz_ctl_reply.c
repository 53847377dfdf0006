/*
 * tests/fuzz/fuzz_ctl_reply.c - libFuzzer target for hsb_dec_ctl_reply (fuzz_common.h). The data
 * of a success reply is re-encoded with msgpack_pack_object; the two encodings must be identical.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

static void fuzz_enc_ctl_reply(msgpack_sbuffer *sb, const hsb_ctl_reply *rep)
{
    msgpack_packer pk;

    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    if (rep->ok) {
        fuzz_check(hsb_enc_ctl_reply_ok_begin(&pk) == HSB_OK, "hsb_enc_ctl_reply_ok_begin");
        fuzz_check(msgpack_pack_object(&pk, rep->data) == 0, "msgpack_pack_object");
    } else {
        fuzz_check(hsb_enc_ctl_reply_err(&pk, rep->err, rep->msg) == HSB_OK,
                   "hsb_enc_ctl_reply_err");
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsb_dec *dec = fuzz_dec(0), *dec2 = fuzz_dec(1);
    msgpack_sbuffer sb1, sb2;
    hsb_ctl_reply a, b;
    uint8_t *in = fuzz_copy(data, size);
    hsb_err err = hsb_dec_ctl_reply(dec, in, size, &a);

    free(in);
    if (err != HSB_OK) {
        fuzz_check_error(dec, err);
        return 0;
    }
    fuzz_enc_ctl_reply(&sb1, &a); /* reads a.data after the input is freed */
    fuzz_check(hsb_dec_ctl_reply(dec2, sb1.data, sb1.size, &b) == HSB_OK, "re-decode");
    fuzz_check(a.ok == b.ok, "ok");
    fuzz_check(a.err == b.err, "err");
    fuzz_check((a.msg == NULL) == (b.msg == NULL), "msg presence");
    fuzz_check(a.msg == NULL || strcmp(a.msg, b.msg) == 0, "msg");
    fuzz_enc_ctl_reply(&sb2, &b);
    fuzz_bytes_equal(&sb1, &sb2);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    return 0;
}
