/*
 * proto/codec.h - encode and decode agent-protocol and control-protocol messages (msgpack-c).
 *
 * Wire shape (docs/protocol.md is the specification): every request and every reply is one msgpack
 * map. Requests carry "op" (agent protocol) or "cmd" (control protocol). Unknown keys are ignored
 * so that newer peers can add keys.
 *
 * Decoding is strict: the first problem found stops decoding and is reported with its own hsb_err
 * (HSB_ETYPE, HSB_EMISSING, HSB_EBADNAME, HSB_ETOOBIG, HSB_EBADPRIO, HSB_ETRUNC, HSB_ETRAILING,
 * HSB_EDEPTH, HSB_EUTF8, ...) and a message that names the key, e.g. "msgs[3].prio: must be 0..3".
 *
 * Ownership: an hsb_dec owns everything a decode produces (strings, arrays, envelope bodies). The
 * decoded structures stay valid until the next hsb_dec_* call on the same decoder, hsb_dec_reset or
 * hsb_dec_fini. The input buffer is not referenced after a decode returns: bodies are copied into
 * the decoder's arena, so the caller may free the input (for example the nng_msg) at once.
 *
 * Encoding writes through a caller-initialised msgpack_packer (an msgpack_sbuffer, an nng_msg via
 * a write callback, ...). Encoders validate nothing beyond what they need to produce valid msgpack:
 * validation is the receiver's job. They return HSB_ENOMEM when the packer's write callback fails.
 *
 * Conventions (docs/protocol.md has the full rules): a negative integer where an unsigned one is
 * expected is HSB_ERANGE (for prio: HSB_EBADPRIO); a float is HSB_ETYPE. An envelope body that is
 * NULL (or has body_len 0) is not written; a body that is absent or nil on the wire decodes as
 * body == NULL, body_len == 0. A decoded body is the value re-encoded canonically (shortest forms),
 * so its bytes may differ from the sender's, never its value. Text fields (cid, token, reason,
 * err, msg, session, control args) must be UTF-8 without NUL. Decoding first scans the input
 * without allocating, so a small input can never make msgpack-c allocate for huge declared sizes.
 *
 * Threads: an hsb_dec is used by one thread at a time; give each thread (or each nng context) its
 * own. Encoders are reentrant. Nothing here blocks.
 */
#ifndef HSB_PROTO_CODEC_H
#define HSB_PROTO_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "proto/envelope.h"
#include "proto/err.h"

/* ---- agent protocol ---------------------------------------------------------------------- */

typedef enum hsb_op {
    HSB_OP_HELLO = 0,
    HSB_OP_SEND,
    HSB_OP_FETCH,
    HSB_OP_BYE,
} hsb_op;

/* A name in a list (handles, subscribes). */
typedef struct hsb_name {
    char s[HSB_NAME_MAX + 3]; /* room for a ".*" suffix pattern */
} hsb_name;

typedef struct hsb_hello {
    uint32_t v; /* protocol version; must be HSB_PROTO_VERSION */
    char agent[HSB_NAME_MAX + 1];
    char token[HSB_TOKEN_MAX + 1];
    hsb_name *handles; /* types this agent handles: names or "prefix.*" patterns */
    size_t n_handles;
    hsb_name *subscribes; /* topics */
    size_t n_subscribes;
} hsb_hello;

typedef struct hsb_send_req {
    hsb_envelope *msgs;
    size_t n_msgs;
} hsb_send_req;

typedef struct hsb_nack {
    uint64_t id;
    char reason[HSB_REASON_MAX + 1];
} hsb_nack;

typedef struct hsb_fetch_req {
    uint32_t max;     /* at most this many envelopes in the reply; default 64, 1..HSB_BATCH_MAX */
    uint32_t wait_ms; /* long-poll time; default 0 (answer at once), at most 60000 */
    uint64_t *acks;
    size_t n_acks;
    hsb_nack *nacks;
    size_t n_nacks;
} hsb_fetch_req;

typedef struct hsb_request {
    hsb_op op;
    union {
        hsb_hello hello;
        hsb_send_req send;
        hsb_fetch_req fetch;
    } u;
} hsb_request;

/* One per-message result of a send: id on success, err + msg otherwise. */
typedef struct hsb_send_result {
    uint64_t id;     /* valid when err == HSB_OK */
    hsb_err err;     /* HSB_OK or the reason this message was refused */
    const char *msg; /* NULL when err == HSB_OK; static or decoder-owned text otherwise */
} hsb_send_result;

typedef struct hsb_reply {
    hsb_op op;       /* the op of the request this answers (given to hsb_dec_reply) */
    bool ok;         /* false: the request failed as a whole; see err and msg */
    hsb_err err;     /* HSB_OK when ok */
    const char *msg; /* error text when !ok, else NULL */
    union {
        struct {
            char session[HSB_SESSION_MAX + 1];
            uint32_t max_body;
            uint32_t max_batch;
        } hello;
        struct {
            hsb_send_result *results;
            size_t n_results;
        } send;
        struct {
            hsb_envelope *msgs;
            size_t n_msgs;
        } fetch;
    } u;
} hsb_reply;

/* ---- control protocol -------------------------------------------------------------------- */

#define HSB_CTL_ARGS_MAX 16
#define HSB_CTL_CMD_MAX  32

/* {cmd: "breaker", args: ["open", "echo"]} */
typedef struct hsb_ctl_request {
    char cmd[HSB_CTL_CMD_MAX + 1]; /* [a-z-]{1,32} */
    const char *args[HSB_CTL_ARGS_MAX];
    size_t n_args; /* each argument: UTF-8, at most 256 bytes, NUL-terminated, decoder-owned */
} hsb_ctl_request;

/* {ok: true, data: any} or {ok: false, err: "E_...", msg: "..."} */
typedef struct hsb_ctl_reply {
    bool ok;
    hsb_err err;
    const char *msg;
    msgpack_object data; /* MSGPACK_OBJECT_NIL when absent; decoder-owned */
} hsb_ctl_reply;

/* ---- decoder ----------------------------------------------------------------------------- */

typedef struct hsb_dec {
    msgpack_zone zone; /* arena for the unpacked tree and everything decoded from it */
    size_t max_body;   /* limit on one envelope's encoded body; HSB_BODY_MAX by default */
    size_t max_batch;  /* limit on envelopes in one send or fetch reply; HSB_BATCH_MAX default */
    hsb_err err;       /* last error */
    char errmsg[160];  /* last error text, naming the key */
} hsb_dec;

/* hsb_dec_init prepares dec with the default limits. Returns HSB_ENOMEM if the arena fails. */
hsb_err hsb_dec_init(hsb_dec *dec);

/* hsb_dec_fini frees everything dec owns. dec may be re-initialised afterwards. */
void hsb_dec_fini(hsb_dec *dec);

/* hsb_dec_reset forgets the previous decode's results and keeps the arena's first chunk. */
void hsb_dec_reset(hsb_dec *dec);

/* hsb_dec_errmsg returns the text of the last error (empty after success); owned by dec. */
const char *hsb_dec_errmsg(const hsb_dec *dec);

/*
 * hsb_dec_request decodes one agent-protocol request from buf[0..len). On HSB_OK *req holds the
 * request (decoder-owned). For send, each envelope's broker-set fields (id, from, deadline,
 * deliveries) are zeroed whatever the client sent; prio defaults to HSB_PRIO_NORMAL.
 * Errors: the malformed-input family, HSB_ETOOBIG, HSB_EBADOP, HSB_EVERSION, HSB_ENOMEM.
 */
hsb_err hsb_dec_request(hsb_dec *dec, const void *buf, size_t len, hsb_request *req);

/*
 * hsb_dec_reply decodes the reply to a request of kind op. Broker-set envelope fields are kept.
 * A well-formed error reply ({ok: false, ...}) decodes with HSB_OK and rep->ok == false.
 */
hsb_err hsb_dec_reply(hsb_dec *dec, hsb_op op, const void *buf, size_t len, hsb_reply *rep);

/*
 * hsb_dec_envelope decodes one envelope map, as stored by the durable queue and dead-letter table
 * (hsb_enc_envelope's output). Broker-set fields are kept.
 */
hsb_err hsb_dec_envelope(hsb_dec *dec, const void *buf, size_t len, hsb_envelope *env);

/* hsb_dec_ctl_request / hsb_dec_ctl_reply decode the control protocol. */
hsb_err hsb_dec_ctl_request(hsb_dec *dec, const void *buf, size_t len, hsb_ctl_request *req);
hsb_err hsb_dec_ctl_reply(hsb_dec *dec, const void *buf, size_t len, hsb_ctl_reply *rep);

/* ---- encoders ---------------------------------------------------------------------------- */

/* Whole messages. */
hsb_err hsb_enc_request(msgpack_packer *pk, const hsb_request *req);
hsb_err hsb_enc_reply(msgpack_packer *pk, const hsb_reply *rep);

/* {ok: false, err: wire(err), msg: msg} for a request that failed as a whole. */
hsb_err hsb_enc_error_reply(msgpack_packer *pk, hsb_err err, const char *msg);

/* One envelope map; absent fields (0, "", NULL body) are omitted. */
hsb_err hsb_enc_envelope(msgpack_packer *pk, const hsb_envelope *env);

/*
 * hsb_enc_envelope_bound returns a number of bytes that hsb_enc_envelope(env) never exceeds
 * (within about 150 bytes of the exact size). Senders reserve a message's buffer with it once:
 * nng 1.5 zeroes and copies the whole buffer each time a message grows. Any thread.
 */
size_t hsb_enc_envelope_bound(const hsb_envelope *env);

/*
 * Streaming forms for the broker, which answers from its own structures without building arrays:
 * hsb_enc_fetch_reply_begin(pk, n) then n hsb_enc_envelope calls;
 * hsb_enc_send_reply_begin(pk, n) then n hsb_enc_send_result calls.
 */
hsb_err hsb_enc_fetch_reply_begin(msgpack_packer *pk, size_t n);
hsb_err hsb_enc_send_reply_begin(msgpack_packer *pk, size_t n);
hsb_err hsb_enc_send_result(msgpack_packer *pk, const hsb_send_result *res);

/* Control protocol. A successful control reply is {ok: true, data: ...}: call
 * hsb_enc_ctl_reply_ok_begin and then pack exactly one value (the data) with pk. */
hsb_err hsb_enc_ctl_request(msgpack_packer *pk, const hsb_ctl_request *req);
hsb_err hsb_enc_ctl_reply_ok_begin(msgpack_packer *pk);
hsb_err hsb_enc_ctl_reply_err(msgpack_packer *pk, hsb_err err, const char *msg);

/* hsb_op_name returns "hello", "send", "fetch" or "bye". Static. */
const char *hsb_op_name(hsb_op op);

#endif /* HSB_PROTO_CODEC_H */
