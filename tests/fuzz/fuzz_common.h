/*
 * tests/fuzz/fuzz_common.h - shared checks for the libFuzzer targets of the proto decoders.
 *
 * Every target follows one pattern: copy the input into a heap buffer of exactly its size, decode
 * it, free the buffer (so that AddressSanitizer catches any decoded field still pointing into the
 * input), re-encode what decoded, decode that again (which must succeed), and compare: the two
 * decoded values field by field, and the two encodings byte for byte.
 *
 * A failed check prints what failed and aborts, which libFuzzer reports as a crash.
 */
#ifndef HSB_FUZZ_COMMON_H
#define HSB_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_check aborts with a message naming what when ok is false. */
void fuzz_check(int ok, const char *what);

/* fuzz_copy returns a malloc'd copy of data[0..size) (never NULL; 1 byte when size is 0). */
uint8_t *fuzz_copy(const uint8_t *data, size_t size);

/* fuzz_dec returns a decoder initialised once per process (index 0 or 1). */
hsb_dec *fuzz_dec(int which);

/* fuzz_check_error checks that a failed decode left a code and a message naming the problem. */
void fuzz_check_error(const hsb_dec *dec, hsb_err err);

/* Field-by-field comparisons; each aborts on the first difference. */
void fuzz_env_equal(const hsb_envelope *a, const hsb_envelope *b);
void fuzz_request_equal(const hsb_request *a, const hsb_request *b);
void fuzz_reply_equal(const hsb_reply *a, const hsb_reply *b);

/* fuzz_bytes_equal compares two encodings. */
void fuzz_bytes_equal(const msgpack_sbuffer *a, const msgpack_sbuffer *b);

#endif /* HSB_FUZZ_COMMON_H */
