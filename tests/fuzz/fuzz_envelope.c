/* tests/fuzz/fuzz_envelope.c - libFuzzer target for hsb_dec_envelope (see fuzz_common.h). */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsb_dec *dec = fuzz_dec(0), *dec2 = fuzz_dec(1);
    msgpack_sbuffer sb1, sb2;
    msgpack_packer pk;
    hsb_envelope a, b;
    uint8_t *in = fuzz_copy(data, size);
    hsb_err err = hsb_dec_envelope(dec, in, size, &a);

    free(in);
    if (err != HSB_OK) {
        fuzz_check_error(dec, err);
        return 0;
    }
    fuzz_check(a.prio < HSB_PRIO_COUNT, "prio in range");
    fuzz_check(a.body_len <= dec->max_body, "body within the limit");
    msgpack_sbuffer_init(&sb1);
    msgpack_sbuffer_init(&sb2);
    msgpack_packer_init(&pk, &sb1, msgpack_sbuffer_write);
    fuzz_check(hsb_enc_envelope(&pk, &a) == HSB_OK, "hsb_enc_envelope");
    fuzz_check(hsb_dec_envelope(dec2, sb1.data, sb1.size, &b) == HSB_OK, "re-decode");
    fuzz_env_equal(&a, &b);
    msgpack_packer_init(&pk, &sb2, msgpack_sbuffer_write);
    fuzz_check(hsb_enc_envelope(&pk, &b) == HSB_OK, "hsb_enc_envelope (2)");
    fuzz_bytes_equal(&sb1, &sb2);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    return 0;
}
