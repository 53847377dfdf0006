/*
 * proto/nng_write.h - a msgpack-c writer that packs straight into an nng_msg's body.
 *
 * For the nng users of the codec (the daemon's gateway and libhsbus); the proto library itself does
 * not include it, so proto keeps no dependency on nng.
 *
 * Why it exists: msgpack-c writes a message in many small pieces (a map header, a key, a value),
 * and nng_msg_append costs a hundred-odd instructions per call whatever its size: under callgrind
 * a send result ({id}) took 614 instructions and an envelope 786 in the one-way batch workload. The
 * writer sizes the body once from the caller's estimate, copies each piece with a bounds check,
 * and trims the body to what was written at the end. When the estimate is short it doubles the
 * body with nng_msg_realloc, which keeps the contents (one copy per doubling: linear overall).
 *
 * Ownership: the writer owns its message from hsb_nng_writer_begin until hsb_nng_writer_end hands
 * it to the caller, or hsb_nng_writer_abort frees it. Threads: any; it touches only its own
 * message. Never blocks.
 */
#ifndef HSB_PROTO_NNG_WRITE_H
#define HSB_PROTO_NNG_WRITE_H

#include <stddef.h>
#include <string.h>

#include <msgpack.h>
#include <nng/nng.h>

typedef struct hsb_nng_writer {
    nng_msg *m;
    char *body;  /* nng_msg_body(m), refreshed when the body moves */
    size_t len;  /* bytes written */
    size_t size; /* the body's length while packing: room for len to grow into */
} hsb_nng_writer;

/* hsb_nng_write_grow is the slow path of hsb_nng_write: doubles the body (at least to fit len
 * more bytes), then copies. Returns 0, or -1 when out of memory. */
static inline int hsb_nng_write_grow(hsb_nng_writer *w, const char *buf, size_t len)
{
    size_t size = w->size < 128 ? 256 : w->size * 2;
    if (size < w->len + len) {
        size = w->len + len;
    }
    if (nng_msg_realloc(w->m, size) != 0) {
        return -1;
    }
    w->body = nng_msg_body(w->m);
    w->size = size;
    memcpy(w->body + w->len, buf, len);
    w->len += len;
    return 0;
}

/* hsb_nng_write is the msgpack-c write callback (data: the hsb_nng_writer). Returns 0, or -1 when
 * out of memory (the packer then reports the failure). */
static inline int hsb_nng_write(void *data, const char *buf, size_t len)
{
    hsb_nng_writer *w = data;
    if (len > w->size - w->len) {
        return hsb_nng_write_grow(w, buf, len);
    }
    memcpy(w->body + w->len, buf, len);
    w->len += len;
    return 0;
}

/* hsb_nng_writer_begin allocates a message with room for about hint bytes and points pk at it.
 * Returns 0 or the nng error of the allocation (then there is nothing to free). */
static inline int hsb_nng_writer_begin(hsb_nng_writer *w, msgpack_packer *pk, size_t hint)
{
    int rv = nng_msg_alloc(&w->m, hint);
    if (rv != 0) {
        w->m = NULL;
        return rv;
    }
    w->body = nng_msg_body(w->m);
    w->len = 0;
    w->size = hint;
    msgpack_packer_init(pk, w, hsb_nng_write);
    return 0;
}

/* hsb_nng_writer_end trims the body to what was written and hands the message to the caller. */
static inline nng_msg *hsb_nng_writer_end(hsb_nng_writer *w)
{
    nng_msg *m = w->m;
    (void)nng_msg_chop(m, w->size - w->len); /* cannot fail: len <= size */
    w->m = NULL;
    return m;
}

/* hsb_nng_writer_abort frees the message of a packing that failed. */
static inline void hsb_nng_writer_abort(hsb_nng_writer *w)
{
    if (w->m != NULL) {
        nng_msg_free(w->m);
        w->m = NULL;
    }
}

#endif /* HSB_PROTO_NNG_WRITE_H */
