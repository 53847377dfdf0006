/* tests/fuzz/fuzz_ctl_request.c - libFuzzer target for hsb_dec_ctl_request (fuzz_common.h). */
#include <stdlib.h>
#include <string.h>

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hsb_dec *dec = fuzz_dec(0), *dec2 = fuzz_dec(1);
    msgpack_sbuffer sb1, sb2;
    msgpack_packer pk;
    hsb_ctl_request a, b;
    uint8_t *in = fuzz_copy(data, size);
    hsb_err err = hsb_dec_ctl_request(dec, in, size, &a);
    size_t i;

    free(in);
    if (err != HSB_OK) {
        fuzz_check_error(dec, err);
        return 0;
    }
    msgpack_sbuffer_init(&sb1);
    msgpack_sbuffer_init(&sb2);
    msgpack_packer_init(&pk, &sb1, msgpack_sbuffer_write);
    fuzz_check(hsb_enc_ctl_request(&pk, &a) == HSB_OK, "hsb_enc_ctl_request");
    fuzz_check(hsb_dec_ctl_request(dec2, sb1.data, sb1.size, &b) == HSB_OK, "re-decode");
    fuzz_check(strcmp(a.cmd, b.cmd) == 0, "cmd");
    fuzz_check(a.n_args == b.n_args, "n_args");
    for (i = 0; i < a.n_args; i++) {
        fuzz_check(strcmp(a.args[i], b.args[i]) == 0, "args");
    }
    msgpack_packer_init(&pk, &sb2, msgpack_sbuffer_write);
    fuzz_check(hsb_enc_ctl_request(&pk, &b) == HSB_OK, "hsb_enc_ctl_request (2)");
    fuzz_bytes_equal(&sb1, &sb2);
    msgpack_sbuffer_destroy(&sb1);
    msgpack_sbuffer_destroy(&sb2);
    return 0;
}
