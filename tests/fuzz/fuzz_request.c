/* tests/fuzz/fuzz_request.c - libFuzzer target for hsb_dec_request (see fuzz_common.h). */
#include <stdlib.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsb_dec *dec = fuzz_dec(0), *dec2 = fuzz_dec(1);
    msgpack_sbuffer sb1, sb2;
    msgpack_packer pk;
    hsb_request a, b;
    uint8_t *in = fuzz_copy(data, size);
    hsb_err err = hsb_dec_request(dec, in, size, &a);

    free(in); /* decoded values must not refer to the input */
    if (err != HSB_OK) {
        fuzz_check_error(dec, err);
        return 0;
    }
    msgpack_sbuffer_init(&sb1);
    msgpack_sbuffer_init(&sb2);
    msgpack_packer_init(&pk, &sb1, msgpack_sbuffer_write);
    fuzz_check(hsb_enc_request(&pk, &a) == HSB_OK, "hsb_enc_request");
    fuzz_check(hsb_dec_request(dec2, sb1.data, sb1.size, &b) == HSB_OK, "re-decode");
    fuzz_request_equal(&a, &b);
    msgpack_packer_init(&pk, &sb2, msgpack_sbuffer_write);
    fuzz_check(hsb_enc_request(&pk, &b) == HSB_OK, "hsb_enc_request (2)");
    fuzz_bytes_equal(&sb1, &sb2);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    return 0;
}
