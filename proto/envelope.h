/*
 * proto/envelope.h - the message envelope of agent protocol v1 and its limits.
 *
 * An envelope is plain data: fixed-size name fields (so a decoded envelope needs no allocation of
 * its own) and a body that is one encoded msgpack value, kept as bytes. The broker never looks
 * inside a body; it only forwards it, so it is carried encoded from the sender's bytes to the
 * receiver's bytes.
 *
 * Ownership: an hsb_envelope does not own its body. After hsb_dec_* the body points into memory
 * owned by the decoder (see codec.h); a sender that fills one in points body at its own bytes.
 *
 * Threads: the functions here are pure and may be called from any thread. None blocks.
 */
#ifndef HSB_PROTO_ENVELOPE_H
#define HSB_PROTO_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/err.h"

#define HSB_PROTO_VERSION 1

#define HSB_NAME_MAX    64         /* agent, type, topic and batch names: [a-z0-9._-]{1,64} */
#define HSB_CID_MAX     128        /* idempotency key: any UTF-8, 1..128 bytes */
#define HSB_TOKEN_MAX   256        /* hello token: any UTF-8, 0..256 bytes */
#define HSB_REASON_MAX  256        /* nack reason and error text, UTF-8, truncated beyond */
#define HSB_SESSION_MAX 64         /* session id returned by hello */
#define HSB_BODY_MAX    (1u << 20) /* default body limit, encoded bytes (1 MiB) */
#define HSB_BATCH_MAX   1024       /* default limit of envelopes in one send or fetch */
#define HSB_LIST_MAX    256        /* handles, subscribes, acks, nacks: entries per request */
#define HSB_DEPTH_MAX   16         /* nesting of maps and arrays in one request, body included */
#define HSB_TTL_MAX_MS  (7u * 24 * 3600 * 1000) /* one week */

typedef enum hsb_prio {
    HSB_PRIO_CRITICAL = 0,
    HSB_PRIO_HIGH = 1,
    HSB_PRIO_NORMAL = 2,
    HSB_PRIO_LOW = 3,
} hsb_prio;

#define HSB_PRIO_COUNT 4

/*
 * An envelope. A name field that is the empty string is absent on the wire. Fields marked
 * "broker" are set by the broker; a client's values for them are ignored on send.
 */
typedef struct hsb_envelope {
    uint64_t id;         /* broker: unique per daemon run and durable across restarts; 0 = unset */
    uint64_t corr;       /* id of the message this one answers; 0 = none */
    int64_t deadline;    /* broker: ms since the epoch; 0 = unset */
    uint32_t ttl_ms;     /* time to live requested by the sender; 0 = the destination's default */
    uint32_t deliveries; /* broker: delivery attempts so far, this one included */
    uint8_t prio;        /* hsb_prio; HSB_PRIO_NORMAL when absent */
    bool durable;        /* commit to the store before send answers */
    char cid[HSB_CID_MAX + 1];
    char from[HSB_NAME_MAX + 1]; /* broker: the sending agent, from its session */
    char to[HSB_NAME_MAX + 1];
    char type[HSB_NAME_MAX + 1];
    char topic[HSB_NAME_MAX + 1];
    char batch[HSB_NAME_MAX + 1];
    const uint8_t *body; /* one encoded msgpack value, or NULL (nil body) */
    size_t body_len;
} hsb_envelope;

/* hsb_envelope_init sets env to the defaults: everything zero/empty, prio HSB_PRIO_NORMAL. */
void hsb_envelope_init(hsb_envelope *env);

/*
 * hsb_name_valid reports whether s[0..len) matches [a-z0-9._-]{1,64}. A pattern name for `handles`
 * may end in ".*" (see hsb_pattern_valid); this function does not accept it.
 */
bool hsb_name_valid(const char *s, size_t len);

/* hsb_pattern_valid accepts a name, or a name followed by ".*" (prefix match), e.g. "lab.*". */
bool hsb_pattern_valid(const char *s, size_t len);

/* hsb_utf8_valid reports whether s[0..len) is well-formed UTF-8 (no overlongs, no surrogates). */
bool hsb_utf8_valid(const char *s, size_t len);

#endif /* HSB_PROTO_ENVELOPE_H */
