/*
 * tests/fuzz/fuzz_reply.c - libFuzzer target for hsb_dec_reply: every input is decoded as the
 * reply to each of the four ops (see fuzz_common.h).
 */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsb_dec *dec = fuzz_dec(0), *dec2 = fuzz_dec(1);
    int op;

    for (op = HSB_OP_HELLO; op <= HSB_OP_BYE; op++) {
        msgpack_sbuffer sb1, sb2;
        msgpack_packer pk;
        hsb_reply a, b;
        uint8_t *in = fuzz_copy(data, size);
        hsb_err err = hsb_dec_reply(dec, (hsb_op)op, in, size, &a);

        free(in);
        if (err != HSB_OK) {
            fuzz_check_error(dec, err);
            continue;
        }
        fuzz_check(a.op == (hsb_op)op, "rep.op is the op asked for");
        fuzz_check(a.ok == (a.err == HSB_OK), "ok iff err is HSB_OK");
        msgpack_sbuffer_init(&sb1);
        msgpack_sbuffer_init(&sb2);
        msgpack_packer_init(&pk, &sb1, msgpack_sbuffer_write);
        fuzz_check(hsb_enc_reply(&pk, &a) == HSB_OK, "hsb_enc_reply");
        fuzz_check(hsb_dec_reply(dec2, (hsb_op)op, sb1.data, sb1.size, &b) == HSB_OK, "re-decode");
        fuzz_reply_equal(&a, &b);
        msgpack_packer_init(&pk, &sb2, msgpack_sbuffer_write);
        fuzz_check(hsb_enc_reply(&pk, &b) == HSB_OK, "hsb_enc_reply (2)");
        fuzz_bytes_equal(&sb1, &sb2);
        msgpack_sbuffer_destroy(&sb1);
        msgpack_sbuffer_destroy(&sb2);
    }
    return 0;
}
