/*
 * proto/codec_int.h - internals shared by the codec files (codec.c, codec_agent.c, codec_ctl.c).
 *
 * Not part of the wire contract: nothing outside proto/ includes this header. Every function here
 * follows the decoder's rules in codec.h: it runs on the thread that owns the decoder, never
 * blocks, allocates only from dec->zone, and on failure records the error in dec (code and a
 * message naming the key with its path) and returns the code.
 */
#ifndef HSB_PROTO_CODEC_INT_H
#define HSB_PROTO_CODEC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "proto/codec.h"

/* The scan rejects nesting deeper than msgpack-c's own stack (MSGPACK_EMBED_STACK_SIZE). */
#define PROTO_SCAN_DEPTH_MAX 32

/* Longest control-protocol argument, in bytes. */
#define PROTO_CTL_ARG_MAX 256

/* Longest fetch wait, in milliseconds. */
#define PROTO_WAIT_MAX_MS 60000u

/* Default fetch size when the request has no "max". */
#define PROTO_FETCH_DEFAULT 64u

/*
 * Where a value sits in the message, for error texts: a chain of keys and indices from the top
 * level down. Built on the stack as the walk descends; formatted only when an error is reported.
 */
typedef struct proto_path {
    const struct proto_path *up; /* enclosing level, NULL at the top */
    const char *key;             /* key of this level, or NULL when it is an array index */
    size_t keylen;
    size_t idx; /* array index when key is NULL */
} proto_path;

/* proto_name_class[c] is 1 when byte c may appear in a name ([a-z0-9._-]); see envelope.c. */
extern const unsigned char proto_name_class[256];

/* Every key the protocols know. One lookup function serves all maps. */
typedef enum proto_key {
    PROTO_K_OP = 0,
    PROTO_K_V,
    PROTO_K_AGENT,
    PROTO_K_TOKEN,
    PROTO_K_HANDLES,
    PROTO_K_SUBSCRIBES,
    PROTO_K_MSGS,
    PROTO_K_MAX,
    PROTO_K_WAIT_MS,
    PROTO_K_ACKS,
    PROTO_K_NACKS,
    PROTO_K_ID,
    PROTO_K_REASON,
    PROTO_K_CID,
    PROTO_K_FROM,
    PROTO_K_TO,
    PROTO_K_TYPE,
    PROTO_K_TOPIC,
    PROTO_K_PRIO,
    PROTO_K_TTL_MS,
    PROTO_K_DEADLINE,
    PROTO_K_BATCH,
    PROTO_K_CORR,
    PROTO_K_DURABLE,
    PROTO_K_BODY,
    PROTO_K_DELIVERIES,
    PROTO_K_OK,
    PROTO_K_ERR,
    PROTO_K_MSG,
    PROTO_K_SESSION,
    PROTO_K_LIMITS,
    PROTO_K_MAX_BODY,
    PROTO_K_MAX_BATCH,
    PROTO_K_RESULTS,
    PROTO_K_CMD,
    PROTO_K_ARGS,
    PROTO_K_DATA,
    PROTO_K_COUNT,
    PROTO_K_UNKNOWN = PROTO_K_COUNT, /* also "no key" for proto_fail */
} proto_key;

#define PROTO_BIT(k) (UINT64_C(1) << (k))

/* proto_key_name returns the wire spelling of key k ("ttl_ms"). */
const char *proto_key_name(proto_key k);

/*
 * proto_fail records err in dec with the text "<path>[.key]: <fmt...>" and returns err. at may be
 * NULL (top level); key may be PROTO_K_UNKNOWN (the path itself is meant).
 */
hsb_err proto_fail(hsb_dec *dec, hsb_err err, const proto_path *at, proto_key key, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

/*
 * proto_unpack starts a decode: it resets dec, checks buf[0..len) with a structural scan (complete,
 * no trailing bytes, declared sizes backed by input, nesting within PROTO_SCAN_DEPTH_MAX), unpacks
 * it into dec->zone and checks that the top level is a map. *root is the map; its contents live in
 * the zone.
 */
hsb_err proto_unpack(hsb_dec *dec, const void *buf, size_t len, msgpack_object *root);

/*
 * proto_collect walks map (at depth `depth`, path at), stores a pointer to the value of each key
 * whose bit is set in wanted into slots[key] (slots must hold PROTO_K_COUNT entries and be zeroed
 * by the caller), and validates every other key and value with proto_check_any. A wanted key
 * that appears twice is HSB_EBADMSG. If found is not NULL it receives the set of keys present.
 */
hsb_err proto_collect(hsb_dec *dec, const proto_path *at, const msgpack_object *map, int depth,
                      uint64_t wanted, const msgpack_object **slots, uint64_t *found);

/*
 * proto_check_any validates any value at depth `depth` (1 = top-level map): containers within
 * HSB_DEPTH_MAX, every string (values and map keys) valid UTF-8. If size is not NULL it receives
 * the value's canonical encoded size (what proto_pack_any writes).
 */
hsb_err proto_check_any(hsb_dec *dec, const proto_path *at, const msgpack_object *o, int depth,
                        size_t *size);

/* proto_pack_any packs o canonically (the encoding proto_check_any measures). Returns 0 or -1. */
int proto_pack_any(msgpack_packer *pk, const msgpack_object *o);

/* Typed getters. Each checks the type (HSB_ETYPE) and range, names key in its error. */
hsb_err proto_get_uint(hsb_dec *dec, const proto_path *at, proto_key key, const msgpack_object *o,
                       uint64_t max, uint64_t *out);
hsb_err proto_get_bool(hsb_dec *dec, const proto_path *at, proto_key key, const msgpack_object *o,
                       bool *out);
/* A name [a-z0-9._-]{1,64} (or a pattern when pattern is true) copied into dst (NUL-ended). */
hsb_err proto_get_name(hsb_dec *dec, const proto_path *at, proto_key key, const msgpack_object *o,
                       bool pattern, char *dst);
/*
 * UTF-8 text of minlen..maxlen bytes copied into dst (room for maxlen + 1). When truncate is true a
 * longer text is cut at a character boundary at most maxlen bytes long instead of rejected.
 */
hsb_err proto_get_text(hsb_dec *dec, const proto_path *at, proto_key key, const msgpack_object *o,
                       size_t minlen, size_t maxlen, bool truncate, char *dst);
/* Like proto_get_text, but the copy is allocated in the zone and returned in *out. */
hsb_err proto_get_text_zone(hsb_dec *dec, const proto_path *at, proto_key key,
                            const msgpack_object *o, size_t maxlen, bool truncate,
                            const char **out);

/* proto_zone_alloc allocates n bytes in dec->zone; HSB_ENOMEM is recorded on failure. */
void *proto_zone_alloc(hsb_dec *dec, size_t n);

/* proto_utf8_cut returns the longest prefix of s[0..len) of at most max bytes that ends on a
 * character boundary (s is valid UTF-8). */
size_t proto_utf8_cut(const char *s, size_t len, size_t max);

/*
 * proto_dec_env decodes one envelope map at depth `depth`. When request is true the broker-set
 * keys (id, from, deadline, deliveries) are treated as unknown keys and left zero.
 */
hsb_err proto_dec_env(hsb_dec *dec, const proto_path *at, const msgpack_object *o, int depth,
                      bool request, hsb_envelope *env);

/*
 * A stack buffer for the fixed part of a message (everything but bodies), large enough for the
 * longest envelope head: 14 keys, a 128-byte cid and five 64-byte names come to under 600 bytes.
 */
typedef struct proto_wbuf {
    size_t len;
    char buf[1024];
} proto_wbuf;

/*
 * proto_wbuf_write appends len bytes to w; -1 when they do not fit. It is inline, and so are the
 * proto_wb_pack_* functions below that call it: packing into a proto_wbuf compiles to stores.
 */
static inline int proto_wbuf_write(proto_wbuf *w, const char *buf, size_t len)
{
    if (len > sizeof(w->buf) - w->len) {
        return -1;
    }
    memcpy(w->buf + w->len, buf, len);
    w->len += len;
    return 0;
}

/*
 * msgpack-c's own packing template, instantiated a second time with a proto_wbuf as its target:
 * proto_wb_pack_map, proto_wb_pack_str, proto_wb_pack_str_body, proto_wb_pack_uint64, ... encode
 * exactly as msgpack_pack_* do, without an indirect call per value. (The template requires
 * msgpack_pack_append_buffer to return the write's result, as msgpack/pack.h defines it.)
 */
#define msgpack_pack_inline_func(name)        static inline int proto_wb_pack##name
#define msgpack_pack_inline_func_cint(name)   static inline int proto_wb_pack##name
#define msgpack_pack_inline_func_fixint(name) static inline int proto_wb_pack_fix##name
#define msgpack_pack_user                     proto_wbuf *
#define msgpack_pack_append_buffer(user, buf, len)                                                 \
    return proto_wbuf_write(user, (const char *)(buf), len)
#include <msgpack/pack_template.h>

/* proto_wbuf_flush hands w's bytes to pk in one write. 0 or -1 like msgpack_pack_*. */
static inline int proto_wbuf_flush(msgpack_packer *pk, const proto_wbuf *w)
{
    return pk->callback(pk->data, w->buf, w->len);
}

/* Packing helpers that return 0 or -1 like msgpack_pack_*. */
int proto_pack_cstr(msgpack_packer *pk, const char *s);
int proto_pack_key(msgpack_packer *pk, proto_key k);

/* Error-reply fields {ok: false, err, msg?} after the caller packed the map header. */
int proto_pack_err_fields(msgpack_packer *pk, hsb_err err, const char *msg);

#endif /* HSB_PROTO_CODEC_INT_H */
