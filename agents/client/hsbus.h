/*
 * hsbus.h - libhsbus, the client library external agents link to talk to hsbusd.
 *
 * This is the only header a user needs: it includes nothing from the hsbus source tree, so it works
 * from an install prefix with `pkg-config --cflags --libs hsbus` (#include <hsbus.h>). The error
 * codes and the limits below carry the same values as the broker's own (proto/err.h,
 * proto/envelope.h); the library checks that at compile time.
 *
 * Model. A client is one nng REQ socket with exactly one pipe (connection) to the daemon. hello
 * binds that pipe to the agent name, so every request the client makes acts as that agent. The
 * client keeps a pool of nng contexts, so calls from several threads are in flight at once (16
 * threads calling hsbus_request pipeline; they do not queue behind each other). Single messages
 * sent from several threads at once (hsbus_send, hsbus_reply, hsbus_request) are grouped: while
 * one send request is on the wire, the messages that arrive queue and go out together in the
 * next one, each still answered on its own. An idle client sends at once.
 *
 * Receiving. Three styles share one path:
 *   - blocking: hsbus_fetch returns owned messages; hsbus_ack / hsbus_nack settle them, and the
 *     acks ride on the next fetch (or on hsbus_flush_acks);
 *   - callback: hsbus_set_handler + hsbus_start run handler threads that call the handler for
 *     each message and ack it when the handler returns HSBUS_OK, nack it otherwise;
 *   - request/reply: hsbus_request sends a message and waits for the message whose corr is its id.
 * Receiver threads (one started by the first hsbus_request, or by hsbus_start) keep a fetch parked
 * at the daemon, hand replies to their waiting requesters and put everything else in a bounded
 * local queue, which the handler threads drain, or hsbus_fetch when no handler is set.
 *
 * Ownership. Calls that send copy what they need: the caller keeps its hsbus_msg. Messages the
 * library returns (hsbus_fetch, hsbus_request) belong to the caller, who frees them with
 * hsbus_msg_free. Calls that consume an object take T ** and clear the caller's pointer;
 * hsbus_close(NULL-or-&NULL) and hsbus_msg_free(&NULL) are no-ops.
 *
 * Threads. Every function taking a client may be called from any thread at the same time, except
 * hsbus_close, which must be the last call on the client and must not run on a handler thread.
 * The library never calls the handler while holding one of its locks.
 *
 * Errors. Every call returns HSBUS_OK or one hsbus_err. When the daemon refused a request as a
 * whole ({ok: false, err, msg}) or a request was answered by a sys.error, the daemon's text is
 * available from hsbus_errmsg(client) on the calling thread until that thread's next failing call
 * (hsbus_errmsg(NULL) for a failed hsbus_connect).
 */
#ifndef HSBUS_H
#define HSBUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(HSBUS_BUILDING) && defined(__GNUC__)
#define HSBUS_API __attribute__((visibility("default")))
#else
#define HSBUS_API
#endif

#define HSBUS_PROTO_VERSION 1
#define HSBUS_NAME_MAX      64         /* agent, type, topic and batch names: [a-z0-9._-]{1,64} */
#define HSBUS_CID_MAX       128        /* idempotency key, UTF-8 */
#define HSBUS_TOKEN_MAX     256        /* hello token, UTF-8 */
#define HSBUS_REASON_MAX    256        /* nack reason and error text */
#define HSBUS_BODY_MAX      (1u << 20) /* the daemon's default body limit (encoded bytes) */
#define HSBUS_BATCH_MAX     1024       /* envelopes in one send or fetch */
#define HSBUS_LIST_MAX      256        /* handles, subscribes, acks, nacks per request */

/* Error codes. The values equal the broker's hsb_err (proto/err.h). */
typedef enum hsbus_err {
    HSBUS_OK = 0,
    HSBUS_EBADMSG, /* Malformed message (the daemon's E_BADMSG and its local refinements). */
    HSBUS_ETYPE,
    HSBUS_EMISSING,
    HSBUS_EBADNAME,
    HSBUS_EBADPRIO,
    HSBUS_ETRUNC,
    HSBUS_ETRAILING,
    HSBUS_EDEPTH,
    HSBUS_EUTF8,
    HSBUS_EBADOP,
    HSBUS_EVERSION,
    HSBUS_ERANGE,
    HSBUS_ETOOBIG,       /* E_TOOBIG: body, batch or request over its limit. */
    HSBUS_ENOROUTE,      /* E_NOROUTE: nothing matches to/type/topic. */
    HSBUS_EEXPIRED,      /* E_EXPIRED: the deadline passed before delivery. */
    HSBUS_EBUSY,         /* E_BUSY: the destination's queue is full. */
    HSBUS_EBREAKER_OPEN, /* E_BREAKER_OPEN: the destination's circuit breaker is open. */
    HSBUS_EAUTH,         /* E_AUTH: bad token, or no hello. */
    HSBUS_EDENIED,       /* E_DENIED: authenticated but not allowed. */
    HSBUS_EDUPLICATE,    /* E_DUPLICATE: a cid already accepted. */
    HSBUS_ESHUTDOWN,     /* E_SHUTDOWN: the daemon is draining. */
    HSBUS_EINTERNAL,     /* E_INTERNAL, or an error code this library does not know. */
    HSBUS_ENOMEM,        /* Allocation failed. */
    HSBUS_EIO,           /* Connection refused or lost, socket path missing, transport error. */
    HSBUS_ETIMEDOUT,     /* A wait ran out (connect, call timeout, hsbus_request timeout). */
    HSBUS_ECLOSED,       /* The client is closing, or its connection to the daemon is gone. */
    HSBUS_EINVAL,        /* An argument is invalid (NULL, empty name, max out of range, ...). */
    HSBUS_ENOTFOUND,
    HSBUS_EDURABLE, /* A durable send reached a daemon without persistence. */
    HSBUS_ERR_COUNT
} hsbus_err;

typedef enum hsbus_prio {
    HSBUS_PRIO_CRITICAL = 0,
    HSBUS_PRIO_HIGH = 1,
    HSBUS_PRIO_NORMAL = 2,
    HSBUS_PRIO_LOW = 3,
} hsbus_prio;

/*
 * A message (envelope). Empty name fields are absent on the wire. Fields marked "broker" are set by
 * the daemon; their values are ignored when sending. body is one encoded msgpack value (use the
 * hsbus_msg_set_body_* helpers to wrap raw bytes) or NULL for nil. The body belongs to the message:
 * hsbus_msg_clear and hsbus_msg_free free it, so point it only at memory from malloc.
 */
typedef struct hsbus_msg {
    uint64_t id;         /* broker: the message's id; 0 = unset */
    uint64_t corr;       /* id of the message this one answers; 0 = none */
    int64_t deadline;    /* broker: ms since the epoch */
    uint32_t ttl_ms;     /* time to live; 0 = the destination's default */
    uint32_t deliveries; /* broker: delivery attempts so far, this one included */
    uint8_t prio;        /* hsbus_prio; HSBUS_PRIO_NORMAL after hsbus_msg_init */
    bool durable;        /* the daemon commits it to its store before answering the send */
    char cid[HSBUS_CID_MAX + 1];
    char from[HSBUS_NAME_MAX + 1]; /* broker: the sending agent */
    char to[HSBUS_NAME_MAX + 1];
    char type[HSBUS_NAME_MAX + 1];
    char topic[HSBUS_NAME_MAX + 1];
    char batch[HSBUS_NAME_MAX + 1];
    uint8_t *body; /* one encoded msgpack value, owned by the message; NULL = nil */
    size_t body_len;
} hsbus_msg;

/* The result of one message of hsbus_send_batch. */
typedef struct hsbus_result {
    uint64_t id;   /* the id the daemon gave the message, when err == HSBUS_OK */
    hsbus_err err; /* HSBUS_OK or why the daemon refused this message */
    char msg[128]; /* the daemon's text when err != HSBUS_OK, else empty; truncated */
} hsbus_result;

/*
 * Connection options. A zero field means its default, so `hsbus_opts o = {.agent = "x"};` is
 * valid. The strings are copied by hsbus_connect.
 */
typedef struct hsbus_opts {
    const char *agent;             /* required: this agent's name, [a-z0-9._-]{1,64} */
    const char *token;             /* NULL = empty token */
    const char *const *handles;    /* types this agent handles ("lab.result", "lab.*") */
    size_t n_handles;              /* at most HSBUS_LIST_MAX */
    const char *const *subscribes; /* topics */
    size_t n_subscribes;           /* at most HSBUS_LIST_MAX */
    int timeout_ms;                /* connect and per-call timeout; default 10000 */
    unsigned contexts;             /* calls in flight at once (nng contexts); default 16 */
    unsigned queue_max;            /* local queue of received messages; default 1024 */
    unsigned poll_ms;              /* long-poll time of the receiver threads; default 1000 */
    size_t recv_max; /* largest reply accepted (bytes); default 256 MiB; fetches ask for at
                        most recv_max / (max_body + 1 KiB) messages so a reply always fits */
} hsbus_opts;

typedef struct hsbus_client hsbus_client;

/*
 * hsbus_handler is called on a handler thread (see hsbus_start) for each message that is not a
 * reply to a pending hsbus_request. msg belongs to the library and is valid only during the call;
 * copy what you keep. Return HSBUS_OK to ack the message; any other code nacks it (the daemon
 * redelivers it and counts a failure against this agent's breaker) with hsbus_strerror(code) as the
 * reason. The handler may call any function of the client except hsbus_close and hsbus_fetch,
 * hsbus_request included. It runs without any library lock held; with several threads it runs
 * concurrently, so messages are handled out of order.
 */
typedef hsbus_err (*hsbus_handler)(hsbus_client *client, const hsbus_msg *msg, void *arg);

/* ---- errors ------------------------------------------------------------------------------ */

/* hsbus_strerror returns a short English description of err. The string is static. Any thread. */
HSBUS_API const char *hsbus_strerror(hsbus_err err);

/* hsbus_err_name returns the C name of err ("HSBUS_EBUSY"), "HSBUS_EUNKNOWN" for a value outside
 * the enum. The string is static. Any thread. */
HSBUS_API const char *hsbus_err_name(hsbus_err err);

/*
 * hsbus_errmsg returns the detail text of the last call on client that failed on the calling
 * thread: the daemon's msg for a refused request or a sys.error, or a local explanation. It returns
 * "" if this thread's last failure was on another client or there is none. A failed hsbus_connect
 * records its text under client NULL: call hsbus_errmsg(NULL) after it. The text is thread-local
 * and valid until the calling thread's next failing hsbus call. It does not block.
 */
HSBUS_API const char *hsbus_errmsg(const hsbus_client *client);

/* ---- connection -------------------------------------------------------------------------- */

/*
 * hsbus_connect dials url ("ipc:///path/agents.sock", "tcp://host:port"), waits for the connection,
 * and says hello as opts->agent with its token, handles and subscribes. On HSBUS_OK *clientp is a
 * new client that the caller owns and releases with hsbus_close; on error *clientp is NULL (the
 * text is in hsbus_errmsg(NULL)). The connection is not re-established if it drops later: calls
 * then fail with HSBUS_ECLOSED (see hsbus_wait), and the agent connects again.
 * Any thread. Blocks while the transport connects (at once for ipc; the system's connect timeout
 * for an unreachable tcp host), then up to opts->timeout_ms for hello.
 * Errors: HSBUS_EINVAL (NULL argument, no agent name, too many handles), HSBUS_EIO (nothing listens
 * at url, transport error), HSBUS_ETIMEDOUT, HSBUS_EAUTH (the daemon refused the token),
 * HSBUS_EVERSION, the daemon's own code for any other refused hello, HSBUS_ENOMEM.
 */
HSBUS_API hsbus_err hsbus_connect(const char *url, const hsbus_opts *opts, hsbus_client **clientp);

/*
 * hsbus_close stops the receiver and handler threads (a running handler finishes first), calls
 * every outstanding hsbus_request_async callback with HSBUS_ECLOSED (on the completion thread,
 * which then ends), flushes pending acks and nacks, says bye, closes the connection and frees the
 * client and every message still in its local queue (the daemon redelivers those: they were never
 * acked). It sets *clientp to NULL. clientp == NULL or *clientp == NULL is a no-op. Call it once,
 * after every other call on the client has returned, and never from a handler. Blocks until running
 * handlers return, then up to the call timeout (ack flush) plus one second (bye).
 */
HSBUS_API void hsbus_close(hsbus_client **clientp);

/* ---- sending ----------------------------------------------------------------------------- */

/*
 * hsbus_send sends one message and waits for the daemon to accept it. The caller keeps msg. On
 * HSBUS_OK the daemon's id for the message is stored in *id (id may be NULL). Any thread; blocks up
 * to the call timeout. Errors: the daemon's per-message code (HSBUS_ENOROUTE, HSBUS_EBUSY,
 * HSBUS_EBREAKER_OPEN, HSBUS_ETOOBIG, HSBUS_EBADNAME, ...; text in hsbus_errmsg), HSBUS_EINVAL,
 * HSBUS_ETIMEDOUT, HSBUS_ECLOSED, HSBUS_EIO, HSBUS_ENOMEM.
 */
HSBUS_API hsbus_err hsbus_send(hsbus_client *client, const hsbus_msg *msg, uint64_t *id);

/*
 * hsbus_send_batch sends msgs[0..n) in one request (one nng message) and stores the outcome of each
 * in results[i], in order. It returns HSBUS_OK when the request as a whole was answered, even if
 * some messages were refused: check every results[i].err. Any other return means no result is
 * valid (the daemon may or may not have accepted the messages if the error is HSBUS_ETIMEDOUT or
 * HSBUS_EIO; use cid to make a retry safe). n must be 1..HSBUS_BATCH_MAX. The caller keeps msgs.
 * Any thread; blocks up to the call timeout.
 */
HSBUS_API hsbus_err hsbus_send_batch(hsbus_client *client, const hsbus_msg *msgs, size_t n,
                                     hsbus_result *results);

/*
 * hsbus_reply sends a reply to req: a message with corr = req->id, to = req->from and the body
 * body[0..len), which must be one encoded msgpack value (NULL = nil). The caller keeps req and
 * body. Any thread, handlers included; blocks up to the call timeout. Errors as hsbus_send.
 */
HSBUS_API hsbus_err hsbus_reply(hsbus_client *client, const hsbus_msg *req, const void *body,
                                size_t len);

/*
 * hsbus_request sends msg and waits up to timeout_ms (<= 0: the call timeout) for its reply: the
 * message whose corr is the id the daemon gave msg. If msg->ttl_ms is 0, the request is sent with
 * ttl_ms = timeout_ms, so the daemon drops it when nobody could still be waiting. On HSBUS_OK
 * *reply is the reply, owned by the caller (hsbus_msg_free). If the daemon later fails the message
 * (a sys.error with corr = its id), the call returns that error's code with its text in
 * hsbus_errmsg. The reply is acked by the library. Many threads may wait at once; their requests
 * are in flight together. A reply that arrives after its requester timed out is delivered like any
 * other message (handler or hsbus_fetch). Starts the receiver thread on first use. Handlers may
 * call it.
 * Errors: those of hsbus_send, HSBUS_ETIMEDOUT, the code of a sys.error.
 */
HSBUS_API hsbus_err hsbus_request(hsbus_client *client, const hsbus_msg *msg, int timeout_ms,
                                  hsbus_msg **reply);

/*
 * hsbus_reply_fn receives the outcome of one hsbus_request_async: err == HSBUS_OK with reply, the
 * reply message (owned by the callee, who frees it with hsbus_msg_free), or an error with reply ==
 * NULL and its text in hsbus_errmsg(client) during the call. It runs on the client's completion
 * thread, one callback at a time, with no library lock held. It may call any function of the
 * client except hsbus_close; a blocking call there delays the other callbacks.
 */
typedef void (*hsbus_reply_fn)(hsbus_client *client, hsbus_err err, hsbus_msg *reply, void *arg);

/*
 * hsbus_request_async sends msg as hsbus_request does but returns without waiting: on HSBUS_OK,
 * fn(client, err, reply, arg) is called exactly once, later, on the completion thread, with
 * the reply, or with the error hsbus_request would have returned (the daemon's per-message code,
 * HSBUS_ETIMEDOUT after timeout_ms (<= 0: the call timeout), the code of a sys.error, or
 * HSBUS_ECLOSED when the client closes or loses its connection first: hsbus_close runs the
 * callbacks still due before it returns). On any other return fn is never called. The message is
 * copied (body included), so the caller keeps msg. Requests made from callbacks while replies come
 * in together are sent together: a callback that answers each reply with the next request keeps
 * requests in flight without a thread per request. Starts the receiver and completion threads on
 * first use. Any thread; does not block beyond a lock (the message is queued in the send group).
 * Errors: HSBUS_EINVAL (NULL client, msg or fn), HSBUS_ENOMEM, HSBUS_ECLOSED, HSBUS_EIO (no
 * thread).
 */
HSBUS_API hsbus_err hsbus_request_async(hsbus_client *client, const hsbus_msg *msg, int timeout_ms,
                                        hsbus_reply_fn fn, void *arg);

/* ---- receiving --------------------------------------------------------------------------- */

/*
 * hsbus_fetch returns up to max (1..HSBUS_BATCH_MAX) messages for this agent in msgs[0..*n),
 * waiting up to wait_ms (0: do not wait; at most 60000) for the first one. Each returned message is
 * owned by the caller (hsbus_msg_free) and must be settled with hsbus_ack or hsbus_nack; the daemon
 * redelivers what is not acked within its ack timeout. Without receiver threads the call sends a
 * fetch request carrying the pending acks and nacks; with them (after hsbus_request or hsbus_start
 * without a handler) it takes messages from the local queue. *n == 0 with HSBUS_OK means nothing
 * came in time. Any thread; blocks up to wait_ms plus the call timeout.
 * Errors: HSBUS_EINVAL (bad max, or a handler is set and its threads run: the handler gets them),
 * HSBUS_ETIMEDOUT, HSBUS_ECLOSED, HSBUS_EIO, HSBUS_ENOMEM, the daemon's code.
 */
HSBUS_API hsbus_err hsbus_fetch(hsbus_client *client, size_t max, int wait_ms, hsbus_msg **msgs,
                                size_t *n);

/*
 * hsbus_ack records that the message with this id was handled; hsbus_nack that it failed, with a
 * reason (may be NULL; truncated to HSBUS_REASON_MAX bytes) that the daemon logs and stores with a
 * dead letter. Neither sends anything: the records ride on the next fetch of this client, or on
 * hsbus_flush_acks. Any thread; does not block (takes the client's lock briefly).
 * Errors: HSBUS_EINVAL (id 0), HSBUS_ENOMEM, HSBUS_ECLOSED.
 */
HSBUS_API hsbus_err hsbus_ack(hsbus_client *client, uint64_t id);
HSBUS_API hsbus_err hsbus_nack(hsbus_client *client, uint64_t id, const char *reason);

/*
 * hsbus_flush_acks sends the pending acks and nacks now, in a fetch that does not wait. A message
 * that fetch returns is put in the local queue, from where hsbus_fetch takes it (or a handler
 * thread, if a handler is set). On error the records stay pending. Any thread;
 * blocks up to the call timeout. Errors: HSBUS_ETIMEDOUT, HSBUS_ECLOSED, HSBUS_EIO, HSBUS_ENOMEM,
 * the daemon's code.
 */
HSBUS_API hsbus_err hsbus_flush_acks(hsbus_client *client);

/*
 * hsbus_set_handler installs fn (with its arg) as the callback for received messages; fn == NULL
 * removes it (messages then wait in the local queue for hsbus_fetch). Set it before hsbus_start.
 * Messages already queued go to the handler once its threads run. Any thread; does not block.
 * Errors: HSBUS_EINVAL (client NULL).
 */
HSBUS_API hsbus_err hsbus_set_handler(hsbus_client *client, hsbus_handler fn, void *arg);

/*
 * hsbus_start makes sure at least threads (1..64) handler threads run, and the receiver threads
 * that feed them: one, or two when threads >= 2 (so one fetch stays parked while the other hands
 * its batch over). Receivers ask the daemon for no more than the local queue has room for
 * (opts.queue_max): that is this client's credit. Each handler thread takes one message at a time
 * from the queue and runs the handler (if set; without one the messages wait for hsbus_fetch).
 * Returns at once; the threads run until hsbus_close. Any thread, handlers included.
 * Errors: HSBUS_EINVAL, HSBUS_ENOMEM, HSBUS_EIO (no thread), HSBUS_ECLOSED.
 */
HSBUS_API hsbus_err hsbus_start(hsbus_client *client, unsigned threads);

/*
 * hsbus_wait blocks until the client's connection to the daemon is lost (then it returns
 * HSBUS_ECLOSED) or timeout_ms passes (HSBUS_ETIMEDOUT; timeout_ms < 0 waits without limit). It
 * lets a callback-style agent's main thread notice that the daemon went away: the library does not
 * reconnect, so the agent closes the client and connects again. Any thread; blocks.
 * Errors: HSBUS_EINVAL (client NULL), HSBUS_ECLOSED, HSBUS_ETIMEDOUT.
 */
HSBUS_API hsbus_err hsbus_wait(hsbus_client *client, int timeout_ms);

/* ---- messages ---------------------------------------------------------------------------- */

/* hsbus_msg_init sets *msg to an empty message: all zero, prio HSBUS_PRIO_NORMAL, no body. It
 * does not free a previous body (see hsbus_msg_clear). Any thread. */
HSBUS_API void hsbus_msg_init(hsbus_msg *msg);

/* hsbus_msg_clear frees msg's body and re-initialises it; for messages on the stack. NULL-safe. */
HSBUS_API void hsbus_msg_clear(hsbus_msg *msg);

/* hsbus_msg_new allocates an initialised message for *msgp. Errors: HSBUS_EINVAL, HSBUS_ENOMEM. */
HSBUS_API hsbus_err hsbus_msg_new(hsbus_msg **msgp);

/* hsbus_msg_free frees *msgp and its body and sets *msgp to NULL. NULL and &NULL are no-ops. */
HSBUS_API void hsbus_msg_free(hsbus_msg **msgp);

/*
 * hsbus_msg_set_body_bin / _str replace msg's body with a copy of data[0..len) encoded as one
 * msgpack bin / str value; hsbus_msg_set_body_raw with a copy of data[0..len), which must already
 * be one encoded msgpack value (the daemon rejects anything else). len 0 with data NULL is allowed
 * (an empty bin/str; for _raw, a nil body). The previous body is freed. Any thread.
 * Errors: HSBUS_EINVAL (msg NULL, data NULL with len > 0), HSBUS_ETOOBIG (over 4 GiB),
 * HSBUS_ENOMEM.
 */
HSBUS_API hsbus_err hsbus_msg_set_body_bin(hsbus_msg *msg, const void *data, size_t len);
HSBUS_API hsbus_err hsbus_msg_set_body_str(hsbus_msg *msg, const char *data, size_t len);
HSBUS_API hsbus_err hsbus_msg_set_body_raw(hsbus_msg *msg, const void *data, size_t len);

/*
 * hsbus_msg_body_bytes reads a body that is one msgpack bin or str value: *data points at its bytes
 * inside msg->body (valid while msg's body is), *len is their count. Any thread.
 * Errors: HSBUS_EINVAL (NULL argument), HSBUS_ETYPE (the body is not a bin or str), HSBUS_ETRUNC.
 */
HSBUS_API hsbus_err hsbus_msg_body_bytes(const hsbus_msg *msg, const uint8_t **data, size_t *len);

/* hsbus_msg_copy makes *dst a deep copy of src (body included). Errors: HSBUS_EINVAL, HSBUS_ENOMEM.
 */
HSBUS_API hsbus_err hsbus_msg_copy(const hsbus_msg *src, hsbus_msg **dst);

#ifdef __cplusplus
}
#endif

#endif /* HSBUS_H */
