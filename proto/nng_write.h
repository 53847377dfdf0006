/*
 * proto/nng_write.h - a msgpack-c write callback that packs into an nng_msg.
 *
 * For the nng users of the codec (the daemon's gateway and libhsbus); the proto library itself does
 * not include it, so proto keeps no dependency on nng.
 *
 * Why it exists: nng 1.5 grows a message's body to exactly the size an append needs. msgpack-c
 * writes a message in many small pieces, so once a message outgrew its first reservation every
 * append reallocated and copied the whole message again: quadratic. Under callgrind that was 47% of
 * the daemon's instructions in the one-way batch workload. Growing by doubling makes it linear.
 *
 * Threads: any; it touches only the message it is given. Never blocks.
 */
#ifndef HSB_PROTO_NNG_WRITE_H
#define HSB_PROTO_NNG_WRITE_H

#include <stddef.h>

#include <nng/nng.h>

/* hsb_nng_write appends buf[0..len) to the nng_msg in data, doubling its capacity when it is
 * full. Returns 0, or -1 when out of memory (the packer then reports the failure). */
static inline int hsb_nng_write(void *data, const char *buf, size_t len)
{
    nng_msg *m = data;
    size_t need = nng_msg_len(m) + len;
    size_t cap = nng_msg_capacity(m);
    if (need > cap) {
        cap = cap < 128 ? 256 : cap * 2;
        if (cap < need) {
            cap = need;
        }
        if (nng_msg_reserve(m, cap) != 0) {
            return -1;
        }
    }
    return nng_msg_append(m, buf, len) == 0 ? 0 : -1;
}

#endif /* HSB_PROTO_NNG_WRITE_H */
