/*
 * agents/client/client.c - libhsbus: connection, context pool, receiver threads, request/reply.
 *
 * Design note.
 *
 * One hsbus_client is one nng REQ socket with one dialer and at most one pipe: hello binds the pipe
 * to the agent, so a second pipe (a reconnect) would act as nobody. The ADD_PRE pipe callback
 * therefore rejects every pipe after the first, and REM_POST marks the client lost: calls fail with
 * HSBUS_ECLOSED from then on and every aio in flight is aborted.
 *
 * Calls borrow a slot (an nng context, its aio and its own hsb_dec) from a pool of opts.contexts
 * slots and run one request/reply on it synchronously in the calling thread, so as many calls are
 * in flight as there are slots. Single-message sends (hsbus_send, hsbus_reply, hsbus_request,
 * hsbus_request_async) go through the send group instead ("Grouped sends" below): queued messages
 * share one send request, on one of HSBUS_GROUPS contexts driven by nng callbacks. REQ resends
 * are disabled: a fetch may be parked at the daemon for up to a minute, and a resent send would
 * duplicate messages.
 *
 * hsbus_request_async's callbacks run on one completion thread per client (started on first use):
 * receivers hand it replies, the send group hands it refusals, and it times requests out itself
 * (its wait ends at the nearest deadline). Requests the callbacks make are sent together after
 * each batch of callbacks ("asynchronous requests" below).
 *
 * Receiver threads each own a slot of their own and loop on fetch. Every fetched message goes
 * through hsbus_route_reply_locked: a reply (corr != 0) whose requester waits is handed to it; a
 * reply that may belong to a request still in its send phase (the daemon can route the reply
 * before the send's answer reaches us) is stashed as an orphan until a requester claims it, every
 * send group that was on the wire when it came has been answered (then no request can claim it),
 * or the call timeout passes; everything else goes to the bounded
 * local queue (hsbus_deliver). The queue's room is the credit the receivers ask for. hsbus_fetch
 * drains the queue or, when a handler is set, the handler threads (hsbus_worker_main) do: handlers
 * run concurrently and never on a receiver, so a slow handler, or one that makes requests of its
 * own, never stops replies from being fetched. The handler always runs with no lock held.
 *
 * Lock order: one mutex (c->mtx) guards all mutable client state. start_mtx only serialises
 * hsbus_ensure with hsbus_close; it is taken before c->mtx, never while c->mtx is held.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "agents/client/hsbus.h"
#include "proto/nng_write.h"
#include "proto/codec.h"
#include "proto/envelope.h"
#include "proto/err.h"

/* The public header repeats the broker's codes and limits; keep the two in step. */
#define HSBUS_SAME(a, b) _Static_assert((int)(a) == (int)(b), #a " must equal " #b)
HSBUS_SAME(HSBUS_OK, HSB_OK);
HSBUS_SAME(HSBUS_EBADMSG, HSB_EBADMSG);
HSBUS_SAME(HSBUS_ETYPE, HSB_ETYPE);
HSBUS_SAME(HSBUS_EMISSING, HSB_EMISSING);
HSBUS_SAME(HSBUS_EBADNAME, HSB_EBADNAME);
HSBUS_SAME(HSBUS_EBADPRIO, HSB_EBADPRIO);
HSBUS_SAME(HSBUS_ETRUNC, HSB_ETRUNC);
HSBUS_SAME(HSBUS_ETRAILING, HSB_ETRAILING);
HSBUS_SAME(HSBUS_EDEPTH, HSB_EDEPTH);
HSBUS_SAME(HSBUS_EUTF8, HSB_EUTF8);
HSBUS_SAME(HSBUS_EBADOP, HSB_EBADOP);
HSBUS_SAME(HSBUS_EVERSION, HSB_EVERSION);
HSBUS_SAME(HSBUS_ERANGE, HSB_ERANGE);
HSBUS_SAME(HSBUS_ETOOBIG, HSB_ETOOBIG);
HSBUS_SAME(HSBUS_ENOROUTE, HSB_ENOROUTE);
HSBUS_SAME(HSBUS_EEXPIRED, HSB_EEXPIRED);
HSBUS_SAME(HSBUS_EBUSY, HSB_EBUSY);
HSBUS_SAME(HSBUS_EBREAKER_OPEN, HSB_EBREAKER_OPEN);
HSBUS_SAME(HSBUS_EAUTH, HSB_EAUTH);
HSBUS_SAME(HSBUS_EDENIED, HSB_EDENIED);
HSBUS_SAME(HSBUS_EDUPLICATE, HSB_EDUPLICATE);
HSBUS_SAME(HSBUS_ESHUTDOWN, HSB_ESHUTDOWN);
HSBUS_SAME(HSBUS_EINTERNAL, HSB_EINTERNAL);
HSBUS_SAME(HSBUS_ENOMEM, HSB_ENOMEM);
HSBUS_SAME(HSBUS_EIO, HSB_EIO);
HSBUS_SAME(HSBUS_ETIMEDOUT, HSB_ETIMEDOUT);
HSBUS_SAME(HSBUS_ECLOSED, HSB_ECLOSED);
HSBUS_SAME(HSBUS_EINVAL, HSB_EINVAL);
HSBUS_SAME(HSBUS_ENOTFOUND, HSB_ENOTFOUND);
HSBUS_SAME(HSBUS_EDURABLE, HSB_EDURABLE);
HSBUS_SAME(HSBUS_ERR_COUNT, HSB_ERR_COUNT);
HSBUS_SAME(HSBUS_PROTO_VERSION, HSB_PROTO_VERSION);
HSBUS_SAME(HSBUS_NAME_MAX, HSB_NAME_MAX);
HSBUS_SAME(HSBUS_CID_MAX, HSB_CID_MAX);
HSBUS_SAME(HSBUS_TOKEN_MAX, HSB_TOKEN_MAX);
HSBUS_SAME(HSBUS_REASON_MAX, HSB_REASON_MAX);
HSBUS_SAME(HSBUS_BODY_MAX, HSB_BODY_MAX);
HSBUS_SAME(HSBUS_BATCH_MAX, HSB_BATCH_MAX);
HSBUS_SAME(HSBUS_LIST_MAX, HSB_LIST_MAX);
HSBUS_SAME(HSBUS_PRIO_NORMAL, HSB_PRIO_NORMAL);

#define HSBUS_DEF_TIMEOUT_MS 10000
#define HSBUS_DEF_CONTEXTS   16
#define HSBUS_DEF_QUEUE_MAX  1024
#define HSBUS_DEF_POLL_MS    1000
#define HSBUS_DEF_RECV_MAX   ((size_t)256 << 20)
#define HSBUS_ENV_OVERHEAD   1024 /* generous bound on an envelope's bytes besides its body */
#define HSBUS_FETCH_MAX      64   /* per receiver fetch: the credit one parked fetch grants */
#define HSBUS_GROUPS         2    /* send groups on the wire at once (see "sending") */
#define HSBUS_WAIT_BUCKETS   256  /* waiter table; ids are sequential, so id % 256 spreads */
#define HSBUS_THREADS_MAX    64
#define HSBUS_WAIT_MAX_MS    60000
#define HSBUS_BYE_TIMEOUT_MS 1000

/* One nng context with its aio and decoder. Used by one thread at a time. */
typedef struct hsbus_slot {
    nng_ctx ctx;
    nng_aio *aio;
    hsb_dec dec;
    bool ctx_open;
    bool dec_ready;
    bool refused; /* the last call was answered {ok: false}: the daemon refused it as a whole */
    struct hsbus_slot *next_free;
} hsbus_slot;

/* A received message in the local queue or the orphan stash. */
typedef struct hsbus_node {
    hsbus_msg *msg;
    int64_t at_ms; /* when it was stashed (orphans) */
    uint64_t seq;  /* orphans: the newest send group on the wire when it was stashed */
    struct hsbus_node *next;
} hsbus_node;

typedef struct hsbus_list {
    hsbus_node *head;
    hsbus_node *tail;
    size_t len;
} hsbus_list;

typedef struct hsbus_async hsbus_async;

/*
 * A request waiting for the message with corr == id: a thread blocked in hsbus_request (it sleeps
 * on cv), or an hsbus_request_async (async != NULL; its callback runs on the completion thread).
 * Registered in the client's waiter table once the daemon gave the request its id.
 */
typedef struct hsbus_waiter {
    uint64_t id;
    hsbus_msg *reply;
    pthread_cond_t cv; /* unused for async */
    hsbus_async *async;
    struct hsbus_waiter *next;
} hsbus_waiter;

/*
 * A message of hsbus_send, hsbus_reply, hsbus_request or hsbus_request_async waiting in the send
 * group (see "sending"). For the synchronous calls it lives on the caller's stack; the group that
 * takes it writes err, res and text, then sets done and wakes w.cv. For a synchronous request the
 * group also registers w as a waiter, so the caller sleeps once, until the reply comes.
 */
typedef struct hsbus_sender {
    const hsb_envelope *env;
    bool request;         /* register w for the reply once the daemon gave the message its id */
    bool done;            /* err, res and text are final */
    bool expired;         /* a sync request whose deadline passed while queued or on the wire */
    bool solo;            /* send alone: its group was refused as a whole for another message */
    int64_t resend_until; /* a solo resend that would start later fails with HSBUS_ETIMEDOUT */
    hsbus_err err;        /* the call as a whole; HSBUS_OK means res is valid */
    hsbus_result res;
    char text[HSB_REASON_MAX + 1]; /* the error text for a failed call */
    hsbus_waiter w;
    struct hsbus_sender *next;
} hsbus_sender;

/*
 * An hsbus_request_async in flight: its own copy of the message (env points into msg), its sender
 * while queued or on the wire, its waiter (s.w) once sent. Owned by the client from the call until
 * its callback returns; then freed.
 */
struct hsbus_async {
    hsbus_sender s;
    hsb_envelope env;
    hsbus_msg msg;
    hsbus_reply_fn fn;
    void *arg;
    int64_t deadline_ms;
    int timeout_ms;
    hsbus_err err;                 /* for the callback: HSBUS_OK with s.w.reply, or why not */
    char text[HSB_REASON_MAX + 1]; /* its hsbus_errmsg during the callback */
    hsbus_async *prev, *next;      /* c->apend (by deadline) or c->adone */
};

/* A send group on the wire, driven by nng callbacks on its own context (hsbus_group_cb). */
typedef struct hsbus_group {
    hsbus_client *client;
    hsbus_slot slot;
    hsbus_sender **batch; /* HSB_BATCH_MAX entries */
    hsb_envelope *envs;   /* HSB_BATCH_MAX entries */
    size_t n;
    uint64_t seq;
    int timeout_ms;
    bool busy;      /* on the wire (or being encoded) */
    bool receiving; /* sent; its answer is awaited */
} hsbus_group;

typedef struct hsbus_recv {
    hsbus_client *client;
    hsbus_slot slot;
    pthread_t thread;
} hsbus_recv;

struct hsbus_client {
    nng_socket sock;
    nng_dialer dialer;
    int timeout_ms;
    unsigned poll_ms;
    size_t queue_max;
    size_t recv_max; /* NNG_OPT_RECVMAXSZ */
    uint32_t max_body;
    uint32_t max_batch;
    char session[HSB_SESSION_MAX + 1];

    pthread_mutex_t mtx;
    pthread_mutex_t start_mtx;
    pthread_condattr_t cattr; /* CLOCK_MONOTONIC for every condvar */
    pthread_cond_t slot_cv;   /* a slot came back to the pool */
    pthread_cond_t queue_cv;  /* the local queue gained messages or room; state changed */

    hsbus_slot *slots; /* fixed array of n_slots */
    unsigned n_slots;
    hsbus_slot *free_slots;

    hsbus_recv *recvs[HSBUS_THREADS_MAX]; /* written under mtx; entries live until close */
    unsigned n_recvs;

    bool have_pipe;
    bool lost;
    bool closing;

    uint64_t *acks; /* pending acks and nacks, sent on the next fetch */
    size_t n_acks, cap_acks;
    hsb_nack *nacks;
    size_t n_nacks, cap_nacks;

    hsbus_list queue;   /* received messages for hsbus_fetch */
    hsbus_list orphans; /* replies that may belong to a request whose send is on the wire */
    size_t sending;     /* requests in their send phase */
    hsbus_waiter *wait_tab[HSBUS_WAIT_BUCKETS]; /* registered waiters by id */
    size_t n_waiters;

    hsbus_sender *group_head; /* single messages waiting to be sent together */
    hsbus_sender *group_tail;
    hsbus_group groups[HSBUS_GROUPS]; /* at most this many send groups on the wire */
    uint64_t group_seq;               /* send groups started so far */
    uint64_t wire_seq[HSBUS_GROUPS];  /* the groups on the wire now */
    unsigned n_wire;
    pthread_cond_t group_cv; /* a group came off the wire (hsbus_close waits for all) */

    hsbus_async *apend_head; /* async requests sent, waiting for a reply, by deadline */
    hsbus_async *apend_tail;
    hsbus_async *adone_head; /* async requests whose callback is due, in order */
    hsbus_async *adone_tail;
    size_t n_async;          /* async requests whose callback has not returned yet */
    pthread_cond_t async_cv; /* the completion thread: adone gained work or state changed */
    pthread_t athread;       /* the completion thread, once athread_on */
    bool athread_on;

    hsbus_handler handler;
    void *handler_arg;
    pthread_t workers[HSBUS_THREADS_MAX]; /* handler threads; written under mtx */
    unsigned n_workers;
};

/* The send group (see "sending"); connect, close and the pipe callback start and stop it. */
static size_t hsbus_group_max(const hsbus_client *c);
static void hsbus_group_cb(void *arg);
static void hsbus_kick_locked(hsbus_client *c);

/* ---- errors ------------------------------------------------------------------------------ */

static _Thread_local struct {
    const hsbus_client *client;
    char text[HSB_REASON_MAX + 1];
} hsbus_tl_err;

static hsbus_err hsbus_fail(const hsbus_client *c, hsbus_err err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* hsbus_fail records the detail text of a failure for hsbus_errmsg and returns err. */
static hsbus_err hsbus_fail(const hsbus_client *c, hsbus_err err, const char *fmt, ...)
{
    va_list ap;

    hsbus_tl_err.client = c;
    va_start(ap, fmt);
    vsnprintf(hsbus_tl_err.text, sizeof(hsbus_tl_err.text), fmt, ap);
    va_end(ap);
    return err;
}

HSBUS_API const char *hsbus_errmsg(const hsbus_client *client)
{
    if (hsbus_tl_err.client != client) {
        return "";
    }
    return hsbus_tl_err.text;
}

HSBUS_API const char *hsbus_strerror(hsbus_err err)
{
    return hsb_strerror((hsb_err)err);
}

/* The C names of the public codes; a static table, so the strings are static too. */
static const char *const hsbus_err_names[HSBUS_ERR_COUNT] = {
    [HSBUS_OK] = "HSBUS_OK",
    [HSBUS_EBADMSG] = "HSBUS_EBADMSG",
    [HSBUS_ETYPE] = "HSBUS_ETYPE",
    [HSBUS_EMISSING] = "HSBUS_EMISSING",
    [HSBUS_EBADNAME] = "HSBUS_EBADNAME",
    [HSBUS_EBADPRIO] = "HSBUS_EBADPRIO",
    [HSBUS_ETRUNC] = "HSBUS_ETRUNC",
    [HSBUS_ETRAILING] = "HSBUS_ETRAILING",
    [HSBUS_EDEPTH] = "HSBUS_EDEPTH",
    [HSBUS_EUTF8] = "HSBUS_EUTF8",
    [HSBUS_EBADOP] = "HSBUS_EBADOP",
    [HSBUS_EVERSION] = "HSBUS_EVERSION",
    [HSBUS_ERANGE] = "HSBUS_ERANGE",
    [HSBUS_ETOOBIG] = "HSBUS_ETOOBIG",
    [HSBUS_ENOROUTE] = "HSBUS_ENOROUTE",
    [HSBUS_EEXPIRED] = "HSBUS_EEXPIRED",
    [HSBUS_EBUSY] = "HSBUS_EBUSY",
    [HSBUS_EBREAKER_OPEN] = "HSBUS_EBREAKER_OPEN",
    [HSBUS_EAUTH] = "HSBUS_EAUTH",
    [HSBUS_EDENIED] = "HSBUS_EDENIED",
    [HSBUS_EDUPLICATE] = "HSBUS_EDUPLICATE",
    [HSBUS_ESHUTDOWN] = "HSBUS_ESHUTDOWN",
    [HSBUS_EINTERNAL] = "HSBUS_EINTERNAL",
    [HSBUS_ENOMEM] = "HSBUS_ENOMEM",
    [HSBUS_EIO] = "HSBUS_EIO",
    [HSBUS_ETIMEDOUT] = "HSBUS_ETIMEDOUT",
    [HSBUS_ECLOSED] = "HSBUS_ECLOSED",
    [HSBUS_EINVAL] = "HSBUS_EINVAL",
    [HSBUS_ENOTFOUND] = "HSBUS_ENOTFOUND",
    [HSBUS_EDURABLE] = "HSBUS_EDURABLE",
};

HSBUS_API const char *hsbus_err_name(hsbus_err err)
{
    if ((int)err < 0 || err >= HSBUS_ERR_COUNT || hsbus_err_names[err] == NULL) {
        return "HSBUS_EUNKNOWN";
    }
    return hsbus_err_names[err];
}

/* hsbus_from_nng maps an nng error to the client's codes, once, at the transport boundary. */
static hsbus_err hsbus_from_nng(int rv)
{
    switch (rv) {
    case 0:
        return HSBUS_OK;
    case NNG_ETIMEDOUT:
        return HSBUS_ETIMEDOUT;
    case NNG_ECLOSED:
    case NNG_ECANCELED:
    case NNG_ESTATE:
        return HSBUS_ECLOSED;
    case NNG_ENOMEM:
        return HSBUS_ENOMEM;
    case NNG_EINVAL:
    case NNG_EADDRINVAL:
    case NNG_ENOTSUP:
        return HSBUS_EINVAL;
    case NNG_EMSGSIZE:
        return HSBUS_ETOOBIG;
    case NNG_EPERM:
    case NNG_EPEERAUTH:
        return HSBUS_EDENIED;
    default: /* ECONNREFUSED, ENOENT, ECONNRESET, ECONNSHUT, EUNREACHABLE, ECRYPTO, ... */
        return HSBUS_EIO;
    }
}

static hsbus_err hsbus_fail_nng(const hsbus_client *c, int rv, const char *what)
{
    return hsbus_fail(c, hsbus_from_nng(rv), "%s: %s", what, nng_strerror(rv));
}

/* ---- time and small helpers -------------------------------------------------------------- */

static int64_t hsbus_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec hsbus_abstime(int64_t deadline_ms)
{
    struct timespec ts;

    ts.tv_sec = deadline_ms / 1000;
    ts.tv_nsec = (long)(deadline_ms % 1000) * 1000000;
    return ts;
}

/* hsbus_copy_name copies a NUL-terminated field of at most cap-1 bytes into dst[cap]. */
static void hsbus_copy_name(char *dst, size_t cap, const char *src, size_t src_cap)
{
    size_t n = strnlen(src, src_cap);

    if (n >= cap) {
        n = cap - 1;
    }
    memcpy(dst, src, n);
    dst[n] = '\0';
}

static void hsbus_list_push(hsbus_list *l, hsbus_node *n)
{
    n->next = NULL;
    if (l->tail != NULL) {
        l->tail->next = n;
    } else {
        l->head = n;
    }
    l->tail = n;
    l->len++;
}

static hsbus_node *hsbus_list_pop(hsbus_list *l)
{
    hsbus_node *n = l->head;

    if (n != NULL) {
        l->head = n->next;
        if (l->head == NULL) {
            l->tail = NULL;
        }
        l->len--;
        n->next = NULL;
    }
    return n;
}

static void hsbus_list_free(hsbus_list *l)
{
    hsbus_node *n;

    while ((n = hsbus_list_pop(l)) != NULL) {
        hsbus_msg_free(&n->msg);
        free(n);
    }
}

/* ---- messages ---------------------------------------------------------------------------- */

HSBUS_API void hsbus_msg_init(hsbus_msg *msg)
{
    if (msg == NULL) {
        return;
    }
    memset(msg, 0, sizeof(*msg));
    msg->prio = HSBUS_PRIO_NORMAL;
}

HSBUS_API void hsbus_msg_clear(hsbus_msg *msg)
{
    if (msg == NULL) {
        return;
    }
    free(msg->body);
    hsbus_msg_init(msg);
}

HSBUS_API hsbus_err hsbus_msg_new(hsbus_msg **msgp)
{
    hsbus_msg *m;

    if (msgp == NULL) {
        return HSBUS_EINVAL;
    }
    *msgp = NULL;
    m = malloc(sizeof(*m));
    if (m == NULL) {
        return HSBUS_ENOMEM;
    }
    hsbus_msg_init(m);
    *msgp = m;
    return HSBUS_OK;
}

HSBUS_API void hsbus_msg_free(hsbus_msg **msgp)
{
    if (msgp == NULL || *msgp == NULL) {
        return;
    }
    free((*msgp)->body);
    free(*msgp);
    *msgp = NULL;
}

HSBUS_API hsbus_err hsbus_msg_copy(const hsbus_msg *src, hsbus_msg **dst)
{
    hsbus_msg *m;

    if (src == NULL || dst == NULL) {
        return HSBUS_EINVAL;
    }
    *dst = NULL;
    m = malloc(sizeof(*m));
    if (m == NULL) {
        return HSBUS_ENOMEM;
    }
    *m = *src;
    m->body = NULL;
    if (src->body != NULL && src->body_len > 0) {
        m->body = malloc(src->body_len);
        if (m->body == NULL) {
            free(m);
            return HSBUS_ENOMEM;
        }
        memcpy(m->body, src->body, src->body_len);
    } else {
        m->body_len = 0;
    }
    *dst = m;
    return HSBUS_OK;
}

/* hsbus_msg_set_body_hdr replaces msg's body with hdr[0..hlen) followed by data[0..len). */
static hsbus_err hsbus_msg_set_body_hdr(hsbus_msg *msg, const uint8_t *hdr, size_t hlen,
                                        const void *data, size_t len)
{
    uint8_t *b;

    b = malloc(hlen + len > 0 ? hlen + len : 1);
    if (b == NULL) {
        return HSBUS_ENOMEM;
    }
    if (hlen > 0) { /* a raw body has no header: memcpy(b, NULL, 0) is undefined */
        memcpy(b, hdr, hlen);
    }
    if (len > 0) {
        memcpy(b + hlen, data, len);
    }
    free(msg->body);
    msg->body = b;
    msg->body_len = hlen + len;
    return HSBUS_OK;
}

/* hsbus_put_be writes the n low bytes of v big-endian (msgpack's byte order). */
static void hsbus_put_be(uint8_t *p, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        p[n - 1 - i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t hsbus_get_be(const uint8_t *p, size_t n)
{
    uint64_t v = 0;

    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

/*
 * hsbus_msg_set_body_sized wraps data[0..len) as a msgpack str or bin, in the smallest form that
 * fits. fix is the fixed-size form's base (0xa0 for str; 0 for bin, which has none); first is the
 * 8-bit form (0xd9 str, 0xc4 bin), and the 16- and 32-bit forms follow it in both families.
 */
static hsbus_err hsbus_msg_set_body_sized(hsbus_msg *msg, const void *data, size_t len, uint8_t fix,
                                          uint8_t first)
{
    uint8_t hdr[5];
    size_t hlen;

    if (msg == NULL || (data == NULL && len > 0)) {
        return HSBUS_EINVAL;
    }
    if (len > UINT32_MAX) {
        return HSBUS_ETOOBIG;
    }
    if (fix != 0 && len <= 31) {
        hdr[0] = (uint8_t)(fix | len);
        hlen = 1;
    } else if (len <= UINT8_MAX) {
        hdr[0] = first;
        hlen = 2;
    } else if (len <= UINT16_MAX) {
        hdr[0] = (uint8_t)(first + 1);
        hlen = 3;
    } else {
        hdr[0] = (uint8_t)(first + 2);
        hlen = 5;
    }
    hsbus_put_be(hdr + 1, len, hlen - 1);
    return hsbus_msg_set_body_hdr(msg, hdr, hlen, data, len);
}

HSBUS_API hsbus_err hsbus_msg_set_body_bin(hsbus_msg *msg, const void *data, size_t len)
{
    return hsbus_msg_set_body_sized(msg, data, len, 0, 0xc4);
}

HSBUS_API hsbus_err hsbus_msg_set_body_str(hsbus_msg *msg, const char *data, size_t len)
{
    return hsbus_msg_set_body_sized(msg, data, len, 0xa0, 0xd9);
}

HSBUS_API hsbus_err hsbus_msg_set_body_raw(hsbus_msg *msg, const void *data, size_t len)
{
    if (msg == NULL || (data == NULL && len > 0)) {
        return HSBUS_EINVAL;
    }
    if (len == 0) {
        free(msg->body);
        msg->body = NULL;
        msg->body_len = 0;
        return HSBUS_OK;
    }
    return hsbus_msg_set_body_hdr(msg, NULL, 0, data, len);
}

HSBUS_API hsbus_err hsbus_msg_body_bytes(const hsbus_msg *msg, const uint8_t **data, size_t *len)
{
    const uint8_t *b;
    size_t hlen, n;

    if (msg == NULL || data == NULL || len == NULL) {
        return HSBUS_EINVAL;
    }
    if (msg->body == NULL || msg->body_len == 0) {
        return HSBUS_ETYPE;
    }
    b = msg->body;
    if ((b[0] & 0xe0) == 0xa0) {
        hlen = 1;
        n = b[0] & 0x1f;
    } else {
        switch (b[0]) {
        case 0xc4:
        case 0xd9:
            hlen = 2;
            break;
        case 0xc5:
        case 0xda:
            hlen = 3;
            break;
        case 0xc6:
        case 0xdb:
            hlen = 5;
            break;
        default:
            return HSBUS_ETYPE;
        }
        if (msg->body_len < hlen) {
            return HSBUS_ETRUNC;
        }
        n = (size_t)hsbus_get_be(b + 1, hlen - 1);
    }
    if (msg->body_len - hlen < n) {
        return HSBUS_ETRUNC;
    }
    *data = b + hlen;
    *len = n;
    return HSBUS_OK;
}

/* hsbus_env_from_msg fills env from msg for sending; env->body points into msg. */
static void hsbus_env_from_msg(hsb_envelope *env, const hsbus_msg *msg)
{
    hsb_envelope_init(env);
    env->corr = msg->corr;
    env->ttl_ms = msg->ttl_ms;
    env->prio = msg->prio;
    env->durable = msg->durable;
    hsbus_copy_name(env->cid, sizeof(env->cid), msg->cid, sizeof(msg->cid));
    hsbus_copy_name(env->to, sizeof(env->to), msg->to, sizeof(msg->to));
    hsbus_copy_name(env->type, sizeof(env->type), msg->type, sizeof(msg->type));
    hsbus_copy_name(env->topic, sizeof(env->topic), msg->topic, sizeof(msg->topic));
    hsbus_copy_name(env->batch, sizeof(env->batch), msg->batch, sizeof(msg->batch));
    env->body = msg->body_len > 0 ? msg->body : NULL;
    env->body_len = env->body != NULL ? msg->body_len : 0;
}

/* hsbus_msg_from_env returns a new message owning a copy of env's body, or NULL (no memory). */
static hsbus_msg *hsbus_msg_from_env(const hsb_envelope *env)
{
    hsbus_msg *m = malloc(sizeof(*m));

    if (m == NULL) {
        return NULL;
    }
    hsbus_msg_init(m);
    m->id = env->id;
    m->corr = env->corr;
    m->deadline = env->deadline;
    m->ttl_ms = env->ttl_ms;
    m->deliveries = env->deliveries;
    m->prio = env->prio;
    m->durable = env->durable;
    hsbus_copy_name(m->cid, sizeof(m->cid), env->cid, sizeof(env->cid));
    hsbus_copy_name(m->from, sizeof(m->from), env->from, sizeof(env->from));
    hsbus_copy_name(m->to, sizeof(m->to), env->to, sizeof(env->to));
    hsbus_copy_name(m->type, sizeof(m->type), env->type, sizeof(env->type));
    hsbus_copy_name(m->topic, sizeof(m->topic), env->topic, sizeof(env->topic));
    hsbus_copy_name(m->batch, sizeof(m->batch), env->batch, sizeof(env->batch));
    if (env->body != NULL && env->body_len > 0) {
        m->body = malloc(env->body_len);
        if (m->body == NULL) {
            free(m);
            return NULL;
        }
        memcpy(m->body, env->body, env->body_len);
        m->body_len = env->body_len;
    }
    return m;
}

/* ---- slots and calls --------------------------------------------------------------------- */

/* hsbus_slot_init opens a slot's context; its aio calls cb(arg) on completion (NULL: the slot is
 * used synchronously, with nng_aio_wait). */
static hsbus_err hsbus_slot_init(hsbus_client *c, hsbus_slot *s, void (*cb)(void *), void *arg)
{
    int rv;

    memset(s, 0, sizeof(*s));
    if (hsb_dec_init(&s->dec) != HSB_OK) {
        return HSBUS_ENOMEM;
    }
    s->dec_ready = true;
    rv = nng_aio_alloc(&s->aio, cb, arg);
    if (rv != 0) {
        return hsbus_fail_nng(c, rv, "nng_aio_alloc");
    }
    rv = nng_ctx_open(&s->ctx, c->sock);
    if (rv != 0) {
        return hsbus_fail_nng(c, rv, "nng_ctx_open");
    }
    s->ctx_open = true;
    return HSBUS_OK;
}

/* hsbus_slot_fini frees a slot; the socket must be closed (or the slot never used) by now. */
static void hsbus_slot_fini(hsbus_slot *s)
{
    if (s->aio != NULL) {
        nng_aio_free(s->aio);
        s->aio = NULL;
    }
    if (s->dec_ready) {
        hsb_dec_fini(&s->dec);
        s->dec_ready = false;
    }
}

/* hsbus_slot_get borrows a slot from the pool, waiting up to the call timeout for one. */
static hsbus_err hsbus_slot_get(hsbus_client *c, hsbus_slot **sp)
{
    struct timespec until = hsbus_abstime(hsbus_now_ms() + c->timeout_ms);
    hsbus_err err = HSBUS_OK;

    pthread_mutex_lock(&c->mtx);
    while (c->free_slots == NULL && !c->closing && !c->lost) {
        if (pthread_cond_timedwait(&c->slot_cv, &c->mtx, &until) == ETIMEDOUT) {
            break;
        }
    }
    if (c->closing || c->lost) {
        err = HSBUS_ECLOSED;
    } else if (c->free_slots == NULL) {
        err = HSBUS_ETIMEDOUT;
    } else {
        *sp = c->free_slots;
        c->free_slots = (*sp)->next_free;
    }
    pthread_mutex_unlock(&c->mtx);
    if (err == HSBUS_ECLOSED) {
        return hsbus_fail(c, err, "client closed or connection lost");
    }
    if (err == HSBUS_ETIMEDOUT) {
        return hsbus_fail(c, err, "all %u contexts busy", c->n_slots);
    }
    return HSBUS_OK;
}

static void hsbus_slot_put(hsbus_client *c, hsbus_slot *s)
{
    pthread_mutex_lock(&c->mtx);
    s->next_free = c->free_slots;
    c->free_slots = s;
    pthread_cond_signal(&c->slot_cv);
    pthread_mutex_unlock(&c->mtx);
}

/* hsbus_encode encodes req into a new nng message, *mp. Any thread; does not block. */
static hsbus_err hsbus_encode(hsbus_client *c, const hsb_request *req, nng_msg **mp)
{
    hsb_nng_writer w;
    msgpack_packer pk;
    size_t hint = 256; /* hello, bye, fetch; nacks with long reasons make the writer grow */
    int rv;

    *mp = NULL;
    if (req->op == HSB_OP_SEND) {
        hint = 32;
        for (size_t i = 0; i < req->u.send.n_msgs; i++) {
            hint += hsb_enc_envelope_bound(&req->u.send.msgs[i]);
        }
    } else if (req->op == HSB_OP_FETCH) {
        hint += req->u.fetch.n_acks * 9; /* each id a u64 */
    }
    rv = hsb_nng_writer_begin(&w, &pk, hint);
    if (rv != 0) {
        return hsbus_fail_nng(c, rv, "nng_msg_alloc");
    }
    if (hsb_enc_request(&pk, req) != HSB_OK) {
        hsb_nng_writer_abort(&w);
        return hsbus_fail(c, HSBUS_ENOMEM, "encoding %s failed", hsb_op_name(req->op));
    }
    *mp = hsb_nng_writer_end(&w);
    return HSBUS_OK;
}

/*
 * hsbus_decode decodes m, the reply to a request of kind op, into *rep (owned by s->dec until the
 * slot's next call) and frees m. A reply with ok == false becomes its error code and sets
 * s->refused. Any thread; does not block.
 */
static hsbus_err hsbus_decode(hsbus_client *c, hsbus_slot *s, hsb_op op, nng_msg *m, hsb_reply *rep)
{
    hsb_err derr = hsb_dec_reply(&s->dec, op, nng_msg_body(m), nng_msg_len(m), rep);

    nng_msg_free(m);
    if (derr != HSB_OK) {
        return hsbus_fail(c, (hsbus_err)derr, "bad %s reply: %s", hsb_op_name(op),
                          hsb_dec_errmsg(&s->dec));
    }
    if (!rep->ok) {
        hsbus_err err = rep->err != HSB_OK ? (hsbus_err)rep->err : HSBUS_EINTERNAL;
        s->refused = true;
        return hsbus_fail(c, err, "%s", rep->msg != NULL ? rep->msg : hsbus_strerror(err));
    }
    return HSBUS_OK;
}

/*
 * hsbus_call runs one request/reply on slot s: encodes req, sends it, waits up to timeout_ms for
 * the reply and decodes it into *rep (see hsbus_decode). Blocks; runs on the thread that holds the
 * slot.
 */
static hsbus_err hsbus_call(hsbus_client *c, hsbus_slot *s, const hsb_request *req, int timeout_ms,
                            hsb_reply *rep)
{
    nng_msg *m;
    hsbus_err err;
    int rv;

    s->refused = false;
    err = hsbus_encode(c, req, &m);
    if (err != HSBUS_OK) {
        return err;
    }
    nng_aio_set_msg(s->aio, m);
    nng_aio_set_timeout(s->aio, timeout_ms);
    nng_ctx_send(s->ctx, s->aio);
    nng_aio_wait(s->aio);
    rv = nng_aio_result(s->aio);
    if (rv != 0) {
        nng_msg_free(nng_aio_get_msg(s->aio)); /* a failed send leaves the message with us */
        nng_aio_set_msg(s->aio, NULL);
        return hsbus_fail_nng(c, rv, hsb_op_name(req->op));
    }
    nng_aio_set_timeout(s->aio, timeout_ms);
    nng_ctx_recv(s->ctx, s->aio);
    nng_aio_wait(s->aio);
    rv = nng_aio_result(s->aio);
    if (rv != 0) {
        return hsbus_fail_nng(c, rv, hsb_op_name(req->op));
    }
    m = nng_aio_get_msg(s->aio);
    nng_aio_set_msg(s->aio, NULL);
    return hsbus_decode(c, s, req->op, m, rep);
}

/* hsbus_timeout clamps the client's timeout plus extra to what an nng duration can hold. */
static int hsbus_timeout(const hsbus_client *c, int extra)
{
    int64_t t = (int64_t)c->timeout_ms + extra;

    return t > INT32_MAX ? INT32_MAX : (int)t;
}

/* ---- acks -------------------------------------------------------------------------------- */

static hsbus_err hsbus_grow(void **p, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *np;

    if (need <= *cap) {
        return HSBUS_OK;
    }
    ncap = *cap == 0 ? 64 : *cap * 2;
    while (ncap < need) {
        ncap *= 2;
    }
    np = realloc(*p, ncap * elem);
    if (np == NULL) {
        return HSBUS_ENOMEM;
    }
    *p = np;
    *cap = ncap;
    return HSBUS_OK;
}

static hsbus_err hsbus_add_ack_locked(hsbus_client *c, uint64_t id)
{
    if (hsbus_grow((void **)&c->acks, &c->cap_acks, c->n_acks + 1, sizeof(*c->acks)) != HSBUS_OK) {
        return HSBUS_ENOMEM;
    }
    c->acks[c->n_acks++] = id;
    return HSBUS_OK;
}

static hsbus_err hsbus_add_nack_locked(hsbus_client *c, uint64_t id, const char *reason)
{
    hsb_nack *n;

    if (hsbus_grow((void **)&c->nacks, &c->cap_nacks, c->n_nacks + 1, sizeof(*c->nacks)) !=
        HSBUS_OK) {
        return HSBUS_ENOMEM;
    }
    n = &c->nacks[c->n_nacks++];
    n->id = id;
    snprintf(n->reason, sizeof(n->reason), "%s", reason != NULL ? reason : "");
    return HSBUS_OK;
}

HSBUS_API hsbus_err hsbus_ack(hsbus_client *client, uint64_t id)
{
    hsbus_err err;

    if (client == NULL || id == 0) {
        return HSBUS_EINVAL;
    }
    pthread_mutex_lock(&client->mtx);
    err = client->closing ? HSBUS_ECLOSED : hsbus_add_ack_locked(client, id);
    pthread_mutex_unlock(&client->mtx);
    return err;
}

HSBUS_API hsbus_err hsbus_nack(hsbus_client *client, uint64_t id, const char *reason)
{
    hsbus_err err;

    if (client == NULL || id == 0) {
        return HSBUS_EINVAL;
    }
    pthread_mutex_lock(&client->mtx);
    err = client->closing ? HSBUS_ECLOSED : hsbus_add_nack_locked(client, id, reason);
    pthread_mutex_unlock(&client->mtx);
    return err;
}

/*
 * hsbus_take_acks moves up to HSB_LIST_MAX pending acks and nacks into fresh arrays in *f for one
 * fetch request. The caller owns the arrays and returns them with hsbus_settle_acks.
 */
static hsbus_err hsbus_take_acks(hsbus_client *c, hsb_fetch_req *f)
{
    hsbus_err err = HSBUS_OK;
    size_t na, nn;

    f->acks = NULL;
    f->nacks = NULL;
    f->n_acks = 0;
    f->n_nacks = 0;
    pthread_mutex_lock(&c->mtx);
    na = c->n_acks < HSB_LIST_MAX ? c->n_acks : HSB_LIST_MAX;
    nn = c->n_nacks < HSB_LIST_MAX ? c->n_nacks : HSB_LIST_MAX;
    if (na > 0) {
        f->acks = malloc(na * sizeof(*f->acks));
        if (f->acks == NULL) {
            err = HSBUS_ENOMEM;
            goto out;
        }
        memcpy(f->acks, c->acks, na * sizeof(*f->acks));
        memmove(c->acks, c->acks + na, (c->n_acks - na) * sizeof(*c->acks));
        c->n_acks -= na;
        f->n_acks = na;
    }
    if (nn > 0) {
        f->nacks = malloc(nn * sizeof(*f->nacks));
        if (f->nacks == NULL) {
            err = HSBUS_ENOMEM;
            goto out;
        }
        memcpy(f->nacks, c->nacks, nn * sizeof(*f->nacks));
        memmove(c->nacks, c->nacks + nn, (c->n_nacks - nn) * sizeof(*c->nacks));
        c->n_nacks -= nn;
        f->n_nacks = nn;
    }
out:
    pthread_mutex_unlock(&c->mtx);
    return err;
}

/* hsbus_settle_acks frees f's arrays; if the fetch failed (!sent) the records go back to pending.
 */
static void hsbus_settle_acks(hsbus_client *c, hsb_fetch_req *f, bool sent)
{
    if (!sent && (f->n_acks > 0 || f->n_nacks > 0)) {
        pthread_mutex_lock(&c->mtx);
        for (size_t i = 0; i < f->n_acks; i++) {
            (void)hsbus_add_ack_locked(c, f->acks[i]);
        }
        for (size_t i = 0; i < f->n_nacks; i++) {
            (void)hsbus_add_nack_locked(c, f->nacks[i].id, f->nacks[i].reason);
        }
        pthread_mutex_unlock(&c->mtx);
    }
    free(f->acks);
    free(f->nacks);
    f->acks = NULL;
    f->nacks = NULL;
    f->n_acks = 0;
    f->n_nacks = 0;
}

/*
 * hsbus_fetch_cap limits a fetch's max so that max bodies of the daemon's largest size fit in one
 * reply under NNG_OPT_RECVMAXSZ, and to the daemon's batch limit.
 */
static uint32_t hsbus_fetch_cap(const hsbus_client *c, uint32_t max)
{
    size_t fit = c->recv_max / ((size_t)c->max_body + HSBUS_ENV_OVERHEAD);

    if (fit < 1) {
        fit = 1;
    }
    if (max > fit) {
        max = (uint32_t)fit;
    }
    if (max > c->max_batch) {
        max = c->max_batch;
    }
    return max;
}

/*
 * hsbus_do_fetch sends one fetch (with pending acks) on slot s and converts the envelopes of the
 * reply into owned messages: *out (malloc'ed array, caller frees it and its messages), *n.
 */
static hsbus_err hsbus_do_fetch(hsbus_client *c, hsbus_slot *s, uint32_t max, uint32_t wait_ms,
                                hsbus_msg ***out, size_t *n)
{
    hsb_request req;
    hsb_reply rep;
    hsbus_msg **msgs = NULL;
    size_t got = 0;
    hsbus_err err;

    *out = NULL;
    *n = 0;
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_FETCH;
    req.u.fetch.max = hsbus_fetch_cap(c, max);
    req.u.fetch.wait_ms = wait_ms;
    err = hsbus_take_acks(c, &req.u.fetch);
    if (err != HSBUS_OK) {
        hsbus_settle_acks(c, &req.u.fetch, false);
        return hsbus_fail(c, err, "no memory for acks");
    }
    err = hsbus_call(c, s, &req, hsbus_timeout(c, (int)wait_ms), &rep);
    /* Acks of a fetch that timed out may have reached the daemon; acking twice is harmless. */
    hsbus_settle_acks(c, &req.u.fetch, err == HSBUS_OK);
    if (err != HSBUS_OK) {
        return err;
    }
    if (rep.u.fetch.n_msgs > 0) {
        msgs = calloc(rep.u.fetch.n_msgs, sizeof(*msgs));
        if (msgs == NULL) {
            return hsbus_fail(c, HSBUS_ENOMEM, "no memory for %zu messages", rep.u.fetch.n_msgs);
        }
        for (size_t i = 0; i < rep.u.fetch.n_msgs; i++) {
            msgs[got] = hsbus_msg_from_env(&rep.u.fetch.msgs[i]);
            if (msgs[got] == NULL) {
                /* Unacked, so the daemon redelivers it after its ack timeout. */
                continue;
            }
            got++;
        }
    }
    *out = msgs;
    *n = got;
    return HSBUS_OK;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static hsbus_waiter **hsbus_wait_bucket(hsbus_client *c, uint64_t id)
{
    return &c->wait_tab[id % HSBUS_WAIT_BUCKETS];
}

static void hsbus_add_waiter_locked(hsbus_client *c, hsbus_waiter *w)
{
    hsbus_waiter **b = hsbus_wait_bucket(c, w->id);

    w->next = *b;
    *b = w;
    c->n_waiters++;
}

/* hsbus_remove_waiter_locked unregisters w if it is registered. */
static void hsbus_remove_waiter_locked(hsbus_client *c, hsbus_waiter *w)
{
    for (hsbus_waiter **pp = hsbus_wait_bucket(c, w->id); *pp != NULL; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            c->n_waiters--;
            return;
        }
    }
}

static hsbus_waiter *hsbus_find_waiter_locked(hsbus_client *c, uint64_t id)
{
    for (hsbus_waiter *w = *hsbus_wait_bucket(c, id); w != NULL; w = w->next) {
        if (w->id == id && w->reply == NULL) {
            return w;
        }
    }
    return NULL;
}

/* hsbus_wake_waiters_locked wakes every synchronous requester (closing or lost) and the
 * completion thread, which fails the asynchronous ones. */
static void hsbus_wake_waiters_locked(hsbus_client *c)
{
    for (size_t i = 0; i < HSBUS_WAIT_BUCKETS; i++) {
        for (hsbus_waiter *w = c->wait_tab[i]; w != NULL; w = w->next) {
            if (w->async == NULL) {
                pthread_cond_signal(&w->cv);
            }
        }
    }
    pthread_cond_broadcast(&c->async_cv);
}

/* ---- asynchronous requests: the completion list ----------------------------------------- */

/* hsbus_apend_unlink_locked takes a out of the list of sent async requests. */
static void hsbus_apend_unlink_locked(hsbus_client *c, hsbus_async *a)
{
    if (a->prev != NULL) {
        a->prev->next = a->next;
    } else {
        c->apend_head = a->next;
    }
    if (a->next != NULL) {
        a->next->prev = a->prev;
    } else {
        c->apend_tail = a->prev;
    }
    a->prev = a->next = NULL;
}

/* hsbus_apend_insert_locked adds a to the sent async requests, kept in deadline order. With one
 * timeout for all (the usual case) it goes at the tail at once. */
static void hsbus_apend_insert_locked(hsbus_client *c, hsbus_async *a)
{
    hsbus_async *after = c->apend_tail;

    while (after != NULL && after->deadline_ms > a->deadline_ms) {
        after = after->prev;
    }
    a->prev = after;
    a->next = after != NULL ? after->next : c->apend_head;
    if (a->next != NULL) {
        a->next->prev = a;
    } else {
        c->apend_tail = a;
    }
    if (after != NULL) {
        after->next = a;
    } else {
        c->apend_head = a;
    }
}

/* hsbus_adone_push_locked makes a's callback due with err (HSBUS_OK: s.w.reply is set) and text
 * (NULL: the code's description), and wakes the completion thread. */
static void hsbus_adone_push_locked(hsbus_client *c, hsbus_async *a, hsbus_err err,
                                    const char *text)
{
    a->err = err;
    snprintf(a->text, sizeof(a->text), "%s",
             text != NULL ? text : (err != HSBUS_OK ? hsbus_strerror(err) : ""));
    a->prev = NULL;
    a->next = NULL;
    if (c->adone_tail != NULL) {
        c->adone_tail->next = a;
    } else {
        c->adone_head = a;
    }
    c->adone_tail = a;
    pthread_cond_signal(&c->async_cv);
}

typedef enum hsbus_route {
    HSBUS_ROUTE_TAKEN, /* handed to a requester or stashed: no longer the caller's */
    HSBUS_ROUTE_USER,  /* the caller must deliver it to the user (handler or fetch result) */
} hsbus_route;

/*
 * hsbus_route_reply_locked hands m to its requester or stashes it as an orphan when it is a reply
 * that may still be claimed. Returns HSBUS_ROUTE_USER for anything else. A message handed to a
 * requester is acked here.
 */
static hsbus_route hsbus_route_reply_locked(hsbus_client *c, hsbus_msg *m, bool may_stash)
{
    hsbus_waiter *w;
    hsbus_node *n;

    if (m->corr == 0) {
        return HSBUS_ROUTE_USER;
    }
    w = hsbus_find_waiter_locked(c, m->corr);
    if (w != NULL) {
        w->reply = m;
        if (m->id != 0) {
            (void)hsbus_add_ack_locked(c, m->id);
        }
        if (w->async != NULL) {
            hsbus_remove_waiter_locked(c, w);
            hsbus_apend_unlink_locked(c, w->async);
            hsbus_adone_push_locked(c, w->async, HSBUS_OK, NULL);
        } else {
            pthread_cond_signal(&w->cv);
        }
        return HSBUS_ROUTE_TAKEN;
    }
    if (may_stash && c->n_wire > 0) {
        n = malloc(sizeof(*n));
        if (n != NULL) {
            n->msg = m;
            n->at_ms = hsbus_now_ms();
            n->seq = c->group_seq;
            hsbus_list_push(&c->orphans, n);
            return HSBUS_ROUTE_TAKEN;
        }
    }
    return HSBUS_ROUTE_USER;
}

/* hsbus_oldest_wire_locked is the oldest send group still on the wire (UINT64_MAX: none). */
static uint64_t hsbus_oldest_wire_locked(const hsbus_client *c)
{
    uint64_t oldest = UINT64_MAX;

    for (unsigned i = 0; i < c->n_wire; i++) {
        if (c->wire_seq[i] < oldest) {
            oldest = c->wire_seq[i];
        }
    }
    return oldest;
}

/*
 * hsbus_release_orphans_locked hands each stashed reply to its requester if one now waits for it,
 * and moves to the local queue (for hsbus_fetch or the handler) those no requester can claim any
 * more: a reply can overtake only the answer of a send that was on the wire when it came, so once
 * every group up to its seq is answered, or the call timeout passed, it is the user's.
 */
static void hsbus_release_orphans_locked(hsbus_client *c)
{
    hsbus_list keep = {0};
    uint64_t oldest = hsbus_oldest_wire_locked(c);
    int64_t now = hsbus_now_ms();
    bool queued = false;
    hsbus_node *n;

    while ((n = hsbus_list_pop(&c->orphans)) != NULL) {
        if (hsbus_route_reply_locked(c, n->msg, false) == HSBUS_ROUTE_TAKEN) {
            free(n);
        } else if (n->seq < oldest || now - n->at_ms > c->timeout_ms) {
            hsbus_list_push(&c->queue, n);
            queued = true;
        } else {
            hsbus_list_push(&keep, n);
        }
    }
    c->orphans = keep;
    if (queued) {
        pthread_cond_broadcast(&c->queue_cv);
    }
}

/*
 * hsbus_deliver puts received messages msgs[0..n) in the local queue, where hsbus_fetch or a
 * handler thread takes them, under one lock and with one broadcast. Takes ownership of every
 * message (one without memory for its node is dropped: it was not acked, so the daemon
 * redelivers it).
 */
static void hsbus_deliver(hsbus_client *c, hsbus_msg **msgs, size_t n)
{
    hsbus_list add = {0};

    for (size_t i = 0; i < n; i++) {
        hsbus_node *node = malloc(sizeof(*node));
        if (node == NULL) {
            hsbus_msg_free(&msgs[i]);
            continue;
        }
        node->msg = msgs[i];
        node->at_ms = 0;
        hsbus_list_push(&add, node);
    }
    if (add.len == 0) {
        return;
    }
    pthread_mutex_lock(&c->mtx);
    if (c->queue.tail != NULL) {
        c->queue.tail->next = add.head;
    } else {
        c->queue.head = add.head;
    }
    c->queue.tail = add.tail;
    c->queue.len += add.len;
    pthread_cond_broadcast(&c->queue_cv);
    pthread_mutex_unlock(&c->mtx);
}

/* hsbus_dispatch routes each of msgs[0..n) (taking ownership of all) and frees the array. One
 * lock for the whole batch: its replies wake their requesters together, and the rest reach the
 * local queue with one broadcast. */
static void hsbus_dispatch(hsbus_client *c, hsbus_msg **msgs, size_t n)
{
    size_t user = 0;

    pthread_mutex_lock(&c->mtx);
    for (size_t i = 0; i < n; i++) {
        if (hsbus_route_reply_locked(c, msgs[i], true) == HSBUS_ROUTE_USER) {
            msgs[user++] = msgs[i];
        }
    }
    pthread_mutex_unlock(&c->mtx);
    hsbus_deliver(c, msgs, user);
    free(msgs);
}

/* hsbus_sweep_orphans runs hsbus_release_orphans_locked (the receivers, after each fetch). */
static void hsbus_sweep_orphans(hsbus_client *c)
{
    pthread_mutex_lock(&c->mtx);
    hsbus_release_orphans_locked(c);
    pthread_mutex_unlock(&c->mtx);
}

/* ---- receiver threads -------------------------------------------------------------------- */

/*
 * hsbus_worker_main is a handler thread: it takes messages from the local queue while a handler is
 * set, calls it with no lock held, and acks or nacks the message by its result. Messages still
 * queued at close are dropped unacked (the daemon redelivers them).
 */
static void *hsbus_worker_main(void *arg)
{
    hsbus_client *c = arg;
    hsbus_handler fn;
    hsbus_node *n;
    void *fn_arg;
    hsbus_err rv;

    for (;;) {
        pthread_mutex_lock(&c->mtx);
        while (!c->closing && !c->lost && (c->handler == NULL || c->queue.len == 0)) {
            pthread_cond_wait(&c->queue_cv, &c->mtx);
        }
        if (c->closing || c->lost) {
            pthread_mutex_unlock(&c->mtx);
            break;
        }
        n = hsbus_list_pop(&c->queue);
        fn = c->handler;
        fn_arg = c->handler_arg;
        pthread_cond_broadcast(&c->queue_cv); /* room for the receivers */
        pthread_mutex_unlock(&c->mtx);

        rv = fn(c, n->msg, fn_arg);
        if (n->msg->id != 0) {
            if (rv == HSBUS_OK) {
                (void)hsbus_ack(c, n->msg->id);
            } else {
                (void)hsbus_nack(c, n->msg->id, hsbus_strerror(rv));
            }
        }
        hsbus_msg_free(&n->msg);
        free(n);
    }
    return NULL;
}

static void *hsbus_recv_main(void *arg)
{
    hsbus_recv *r = arg;
    hsbus_client *c = r->client;
    hsbus_msg **msgs;
    size_t n;
    uint32_t max;
    hsbus_err err;

    for (;;) {
        pthread_mutex_lock(&c->mtx);
        /* The local queue bounds what we ask for (credit), unless a requester waits: its reply
         * must not be stuck behind a full queue. */
        while (!c->closing && !c->lost && c->queue.len >= c->queue_max && c->n_waiters == 0 &&
               c->sending == 0) {
            pthread_cond_wait(&c->queue_cv, &c->mtx);
        }
        if (c->closing || c->lost) {
            pthread_mutex_unlock(&c->mtx);
            break;
        }
        max = HSBUS_FETCH_MAX;
        if (c->queue.len + max > c->queue_max) {
            max = c->queue.len < c->queue_max ? (uint32_t)(c->queue_max - c->queue.len) : 8;
        }
        pthread_mutex_unlock(&c->mtx);

        err = hsbus_do_fetch(c, &r->slot, max, c->poll_ms, &msgs, &n);
        if (err == HSBUS_OK) {
            hsbus_dispatch(c, msgs, n);
            hsbus_sweep_orphans(c);
            continue;
        }
        pthread_mutex_lock(&c->mtx);
        if (!c->closing && !c->lost && err != HSBUS_ETIMEDOUT) {
            /* A refused fetch (E_BUSY, E_SHUTDOWN, ...) must not spin. */
            struct timespec until = hsbus_abstime(hsbus_now_ms() + 100);
            (void)pthread_cond_timedwait(&c->queue_cv, &c->mtx, &until);
        }
        pthread_mutex_unlock(&c->mtx);
    }
    return NULL;
}

/* hsbus_add_receiver starts one receiver thread. Called with start_mtx held, c->mtx not held. */
static hsbus_err hsbus_add_receiver(hsbus_client *c)
{
    hsbus_recv *r = calloc(1, sizeof(*r));
    hsbus_err err;

    if (r == NULL) {
        return HSBUS_ENOMEM;
    }
    r->client = c;
    err = hsbus_slot_init(c, &r->slot, NULL, NULL);
    if (err != HSBUS_OK) {
        goto fail_slot;
    }
    nng_ctx_set_ms(r->slot.ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    pthread_mutex_lock(&c->mtx);
    if (pthread_create(&r->thread, NULL, hsbus_recv_main, r) != 0) {
        pthread_mutex_unlock(&c->mtx);
        err = HSBUS_EIO;
        goto fail_thread;
    }
    c->recvs[c->n_recvs++] = r;
    pthread_mutex_unlock(&c->mtx);
    return HSBUS_OK;

fail_thread:
    if (r->slot.ctx_open) {
        nng_ctx_close(r->slot.ctx);
    }
fail_slot:
    hsbus_slot_fini(&r->slot);
    free(r);
    return err;
}

/*
 * hsbus_ensure makes sure at least recvs receiver threads and workers handler threads run.
 * start_mtx serialises it with hsbus_close, which sets closing under start_mtx, so no thread is
 * added once close has begun.
 */
static hsbus_err hsbus_ensure(hsbus_client *c, unsigned recvs, unsigned workers)
{
    hsbus_err err = HSBUS_OK;
    unsigned have_r, have_w;

    pthread_mutex_lock(&c->start_mtx);
    for (;;) {
        pthread_mutex_lock(&c->mtx);
        have_r = c->n_recvs;
        have_w = c->n_workers;
        if (c->closing || c->lost) {
            err = HSBUS_ECLOSED;
        }
        pthread_mutex_unlock(&c->mtx);
        if (err != HSBUS_OK || (have_r >= recvs && have_w >= workers)) {
            break;
        }
        if (have_r < recvs) {
            err = hsbus_add_receiver(c);
            continue;
        }
        pthread_mutex_lock(&c->mtx);
        if (pthread_create(&c->workers[c->n_workers], NULL, hsbus_worker_main, c) != 0) {
            err = HSBUS_EIO;
        } else {
            c->n_workers++;
        }
        pthread_mutex_unlock(&c->mtx);
    }
    pthread_mutex_unlock(&c->start_mtx);
    if (err == HSBUS_ECLOSED) {
        return hsbus_fail(c, err, "client closed or connection lost");
    }
    if (err != HSBUS_OK) {
        return hsbus_fail(c, err, "starting threads failed");
    }
    return HSBUS_OK;
}

HSBUS_API hsbus_err hsbus_start(hsbus_client *client, unsigned threads)
{
    if (client == NULL || threads == 0 || threads > HSBUS_THREADS_MAX) {
        return HSBUS_EINVAL;
    }
    /* Two receivers keep a fetch parked while the other one is handing its batch over. */
    return hsbus_ensure(client, threads >= 2 ? 2 : 1, threads);
}

HSBUS_API hsbus_err hsbus_wait(hsbus_client *client, int timeout_ms)
{
    struct timespec until;
    hsbus_err err = HSBUS_ETIMEDOUT;

    if (client == NULL) {
        return HSBUS_EINVAL;
    }
    until = hsbus_abstime(hsbus_now_ms() + (timeout_ms > 0 ? timeout_ms : 0));
    pthread_mutex_lock(&client->mtx);
    for (;;) {
        if (client->closing || client->lost) {
            err = HSBUS_ECLOSED;
            break;
        }
        if (timeout_ms >= 0 &&
            pthread_cond_timedwait(&client->queue_cv, &client->mtx, &until) == ETIMEDOUT) {
            break;
        }
        if (timeout_ms < 0) {
            pthread_cond_wait(&client->queue_cv, &client->mtx);
        }
    }
    pthread_mutex_unlock(&client->mtx);
    if (err == HSBUS_ECLOSED) {
        return hsbus_fail(client, err, "connection to the daemon lost");
    }
    return err;
}

HSBUS_API hsbus_err hsbus_set_handler(hsbus_client *client, hsbus_handler fn, void *arg)
{
    if (client == NULL) {
        return HSBUS_EINVAL;
    }
    pthread_mutex_lock(&client->mtx);
    client->handler = fn;
    client->handler_arg = arg;
    pthread_cond_broadcast(&client->queue_cv);
    pthread_mutex_unlock(&client->mtx);
    return HSBUS_OK;
}

/* ---- pipe events ------------------------------------------------------------------------- */

/*
 * hsbus_pipe_cb runs on an nng thread. ADD_PRE admits the first pipe only; REM_POST of that pipe
 * marks the client lost and aborts everything in flight, outside c->mtx: the send groups' aios
 * have a callback (hsbus_group_cb), which takes c->mtx.
 */
static void hsbus_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    hsbus_client *c = arg;
    nng_aio *aios[HSBUS_THREADS_MAX + HSBUS_GROUPS];
    unsigned n_aios = 0;
    bool reject = false;

    pthread_mutex_lock(&c->mtx);
    if (ev == NNG_PIPE_EV_ADD_PRE) {
        reject = c->have_pipe || c->closing;
        c->have_pipe = true;
    } else if (ev == NNG_PIPE_EV_REM_POST && !c->lost) {
        c->lost = true;
        for (unsigned i = 0; i < c->n_recvs; i++) {
            aios[n_aios++] = c->recvs[i]->slot.aio;
        }
        for (unsigned i = 0; i < HSBUS_GROUPS; i++) {
            if (c->groups[i].slot.aio != NULL) {
                aios[n_aios++] = c->groups[i].slot.aio;
            }
        }
        pthread_cond_broadcast(&c->slot_cv);
        pthread_cond_broadcast(&c->queue_cv);
        hsbus_wake_waiters_locked(c);
        hsbus_kick_locked(c); /* fails what is queued */
    } else {
        pthread_mutex_unlock(&c->mtx);
        return;
    }
    pthread_mutex_unlock(&c->mtx);
    if (reject) {
        nng_pipe_close(p);
        return;
    }
    if (ev == NNG_PIPE_EV_REM_POST) {
        for (unsigned i = 0; i < n_aios; i++) {
            nng_aio_abort(aios[i], NNG_ECLOSED);
        }
        for (unsigned i = 0; i < c->n_slots; i++) {
            if (c->slots[i].aio != NULL) {
                nng_aio_abort(c->slots[i].aio, NNG_ECLOSED);
            }
        }
    }
}

/* ---- connect and close ------------------------------------------------------------------- */

static hsbus_err hsbus_hello(hsbus_client *c, const hsbus_opts *o)
{
    hsb_request req;
    hsb_reply rep;
    hsb_hello *h = &req.u.hello;
    hsbus_slot *s = &c->slots[0];
    hsbus_err err;

    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_HELLO;
    h->v = HSB_PROTO_VERSION;
    snprintf(h->agent, sizeof(h->agent), "%s", o->agent);
    snprintf(h->token, sizeof(h->token), "%s", o->token != NULL ? o->token : "");
    if (o->n_handles > 0) {
        h->handles = calloc(o->n_handles, sizeof(*h->handles));
        if (h->handles == NULL) {
            err = HSBUS_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < o->n_handles; i++) {
            snprintf(h->handles[i].s, sizeof(h->handles[i].s), "%s", o->handles[i]);
        }
        h->n_handles = o->n_handles;
    }
    if (o->n_subscribes > 0) {
        h->subscribes = calloc(o->n_subscribes, sizeof(*h->subscribes));
        if (h->subscribes == NULL) {
            err = HSBUS_ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < o->n_subscribes; i++) {
            snprintf(h->subscribes[i].s, sizeof(h->subscribes[i].s), "%s", o->subscribes[i]);
        }
        h->n_subscribes = o->n_subscribes;
    }
    err = hsbus_call(c, s, &req, c->timeout_ms, &rep);
    if (err == HSBUS_OK) {
        snprintf(c->session, sizeof(c->session), "%s", rep.u.hello.session);
        c->max_body = rep.u.hello.max_body != 0 ? rep.u.hello.max_body : HSB_BODY_MAX;
        c->max_batch = rep.u.hello.max_batch != 0 ? rep.u.hello.max_batch : HSB_BATCH_MAX;
    }
out:
    free(h->handles);
    free(h->subscribes);
    return err;
}

static hsbus_err hsbus_check_opts(const hsbus_opts *o)
{
    if (o->agent == NULL || o->agent[0] == '\0' || strlen(o->agent) > HSB_NAME_MAX) {
        return HSBUS_EINVAL;
    }
    if ((o->token != NULL && strlen(o->token) > HSB_TOKEN_MAX) || o->n_handles > HSB_LIST_MAX ||
        o->n_subscribes > HSB_LIST_MAX || (o->n_handles > 0 && o->handles == NULL) ||
        (o->n_subscribes > 0 && o->subscribes == NULL) || o->timeout_ms < 0) {
        return HSBUS_EINVAL;
    }
    for (size_t i = 0; i < o->n_handles; i++) {
        if (o->handles[i] == NULL || strlen(o->handles[i]) > HSB_NAME_MAX + 2) {
            return HSBUS_EINVAL;
        }
    }
    for (size_t i = 0; i < o->n_subscribes; i++) {
        if (o->subscribes[i] == NULL || strlen(o->subscribes[i]) > HSB_NAME_MAX) {
            return HSBUS_EINVAL;
        }
    }
    return HSBUS_OK;
}

/* hsbus_free_client frees everything; the socket is closed (or was never opened) by now. */
static void hsbus_free_client(hsbus_client *c)
{
    for (unsigned i = 0; i < c->n_recvs; i++) {
        hsbus_slot_fini(&c->recvs[i]->slot);
        free(c->recvs[i]);
    }
    if (c->slots != NULL) {
        for (unsigned i = 0; i < c->n_slots; i++) {
            hsbus_slot_fini(&c->slots[i]);
        }
        free(c->slots);
    }
    for (unsigned i = 0; i < HSBUS_GROUPS; i++) {
        hsbus_slot_fini(&c->groups[i].slot);
        free(c->groups[i].batch);
        free(c->groups[i].envs);
    }
    hsbus_list_free(&c->queue);
    hsbus_list_free(&c->orphans);
    free(c->acks);
    free(c->nacks);
    pthread_cond_destroy(&c->async_cv);
    pthread_cond_destroy(&c->group_cv);
    pthread_cond_destroy(&c->queue_cv);
    pthread_cond_destroy(&c->slot_cv);
    pthread_condattr_destroy(&c->cattr);
    pthread_mutex_destroy(&c->start_mtx);
    pthread_mutex_destroy(&c->mtx);
    free(c);
}

HSBUS_API hsbus_err hsbus_connect(const char *url, const hsbus_opts *opts, hsbus_client **clientp)
{
    hsbus_client *c = NULL;
    bool sock_open = false;
    hsbus_err err;
    int rv;

    if (clientp == NULL) {
        return HSBUS_EINVAL;
    }
    *clientp = NULL;
    if (url == NULL || opts == NULL) {
        return hsbus_fail(NULL, HSBUS_EINVAL, "url and opts are required");
    }
    err = hsbus_check_opts(opts);
    if (err != HSBUS_OK) {
        return hsbus_fail(NULL, err, "invalid options (agent name, token or lists)");
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return HSBUS_ENOMEM;
    }
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : HSBUS_DEF_TIMEOUT_MS;
    c->poll_ms = opts->poll_ms > 0 ? opts->poll_ms : HSBUS_DEF_POLL_MS;
    if (c->poll_ms > HSBUS_WAIT_MAX_MS) {
        c->poll_ms = HSBUS_WAIT_MAX_MS;
    }
    c->queue_max = opts->queue_max > 0 ? opts->queue_max : HSBUS_DEF_QUEUE_MAX;
    c->n_slots = opts->contexts > 0 ? opts->contexts : HSBUS_DEF_CONTEXTS;
    pthread_mutex_init(&c->mtx, NULL);
    pthread_mutex_init(&c->start_mtx, NULL);
    pthread_condattr_init(&c->cattr);
    pthread_condattr_setclock(&c->cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&c->slot_cv, &c->cattr);
    pthread_cond_init(&c->queue_cv, &c->cattr);
    pthread_cond_init(&c->group_cv, &c->cattr);
    pthread_cond_init(&c->async_cv, &c->cattr);

    rv = nng_req0_open(&c->sock);
    if (rv != 0) {
        err = hsbus_fail_nng(NULL, rv, "nng_req0_open");
        goto fail;
    }
    sock_open = true;
    c->recv_max = opts->recv_max > 0 ? opts->recv_max : HSBUS_DEF_RECV_MAX;
    /* A reply over the limit makes nng drop the connection, so fetches ask for no more than fits
     * (see hsbus_fetch_cap). No resends: a fetch may be parked for a minute, and a resent send
     * would duplicate messages. */
    rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, c->recv_max);
    if (rv == 0) {
        rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    }
    if (rv != 0) {
        err = hsbus_fail_nng(NULL, rv, "socket options");
        goto fail;
    }
    nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_PRE, hsbus_pipe_cb, c);
    nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, hsbus_pipe_cb, c);

    c->slots = calloc(c->n_slots, sizeof(*c->slots));
    if (c->slots == NULL) {
        err = HSBUS_ENOMEM;
        goto fail;
    }
    for (unsigned i = 0; i < c->n_slots; i++) {
        err = hsbus_slot_init(c, &c->slots[i], NULL, NULL);
        if (err != HSBUS_OK) {
            goto fail;
        }
        nng_ctx_set_ms(c->slots[i].ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    }

    rv = nng_dialer_create(&c->dialer, c->sock, url);
    if (rv != 0) {
        err = hsbus_fail_nng(NULL, rv, url);
        goto fail;
    }
    nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMINT, 1000);
    nng_dialer_set_ms(c->dialer, NNG_OPT_RECONNMAXT, 10000);
    rv = nng_dialer_start(c->dialer, 0); /* synchronous: fails at once if nothing listens */
    if (rv != 0) {
        err = hsbus_fail(NULL, hsbus_from_nng(rv), "connecting to %s: %s", url, nng_strerror(rv));
        goto fail;
    }

    err = hsbus_hello(c, opts);
    if (err != HSBUS_OK) {
        /* hsbus_call recorded the text against c, which is about to go: re-home it. */
        char text[sizeof(hsbus_tl_err.text)];
        snprintf(text, sizeof(text), "hello: %s", hsbus_errmsg(c));
        (void)hsbus_fail(NULL, err, "%s", text);
        goto fail;
    }
    for (unsigned i = 0; i < HSBUS_GROUPS; i++) {
        hsbus_group *g = &c->groups[i];
        g->client = c;
        g->batch = calloc(hsbus_group_max(c), sizeof(*g->batch));
        g->envs = calloc(hsbus_group_max(c), sizeof(*g->envs));
        if (g->batch == NULL || g->envs == NULL) {
            err = hsbus_fail(NULL, HSBUS_ENOMEM, "no memory for send groups");
            goto fail;
        }
        err = hsbus_slot_init(c, &g->slot, hsbus_group_cb, g);
        if (err != HSBUS_OK) {
            goto fail;
        }
        nng_ctx_set_ms(g->slot.ctx, NNG_OPT_REQ_RESENDTIME, NNG_DURATION_INFINITE);
    }
    for (unsigned i = c->n_slots; i-- > 0;) {
        c->slots[i].next_free = c->free_slots;
        c->free_slots = &c->slots[i];
    }
    *clientp = c;
    return HSBUS_OK;

fail:
    if (sock_open) {
        pthread_mutex_lock(&c->mtx);
        c->closing = true;
        pthread_mutex_unlock(&c->mtx);
        nng_close(c->sock);
    }
    hsbus_free_client(c);
    return err;
}

HSBUS_API void hsbus_close(hsbus_client **clientp)
{
    hsbus_client *c;
    bool flush, lost;
    unsigned n_recvs, n_workers;
    hsbus_slot *s;
    hsb_request req;
    hsb_reply rep;

    if (clientp == NULL || *clientp == NULL) {
        return;
    }
    c = *clientp;
    *clientp = NULL;

    /* 1. Stop the receivers: closing their contexts fails their parked fetch at once. Once closing
     * is set (under start_mtx, so no hsbus_start is half-way), no receiver is added, so the join
     * runs without start_mtx: a handler still running may call hsbus_start and get ECLOSED. */
    pthread_mutex_lock(&c->start_mtx);
    pthread_mutex_lock(&c->mtx);
    c->closing = true;
    n_recvs = c->n_recvs;
    n_workers = c->n_workers;
    pthread_cond_broadcast(&c->slot_cv);
    pthread_cond_broadcast(&c->queue_cv);
    hsbus_wake_waiters_locked(c);
    hsbus_kick_locked(c); /* fails what is queued */
    pthread_mutex_unlock(&c->mtx);
    pthread_mutex_unlock(&c->start_mtx);
    for (unsigned i = 0; i < n_recvs; i++) {
        nng_ctx_close(c->recvs[i]->slot.ctx);
    }
    for (unsigned i = 0; i < n_recvs; i++) {
        pthread_join(c->recvs[i]->thread, NULL);
    }
    for (unsigned i = 0; i < n_workers; i++) {
        pthread_join(c->workers[i], NULL);
    }
    /* Send groups still on the wire fail at once (their callbacks finish their messages), then
     * the completion thread runs every outstanding callback (HSBUS_ECLOSED) and ends. */
    for (unsigned i = 0; i < HSBUS_GROUPS; i++) {
        if (c->groups[i].slot.ctx_open) {
            nng_ctx_close(c->groups[i].slot.ctx);
        }
    }
    pthread_mutex_lock(&c->mtx);
    while (c->n_wire > 0) {
        pthread_cond_wait(&c->group_cv, &c->mtx);
    }
    pthread_cond_broadcast(&c->async_cv);
    pthread_mutex_unlock(&c->mtx);
    if (c->athread_on) {
        pthread_join(c->athread, NULL);
    }

    /* 2. Flush acks and say bye on a slot of our own (all are free: this is the last call). */
    pthread_mutex_lock(&c->mtx);
    lost = c->lost;
    flush = c->n_acks > 0 || c->n_nacks > 0;
    s = c->free_slots;
    if (s != NULL) {
        c->free_slots = s->next_free;
    }
    pthread_mutex_unlock(&c->mtx);
    if (s != NULL && !lost) {
        if (flush) {
            hsbus_msg **msgs;
            size_t n;

            if (hsbus_do_fetch(c, s, 1, 0, &msgs, &n) == HSBUS_OK) {
                for (size_t i = 0; i < n; i++) {
                    hsbus_msg_free(&msgs[i]); /* never acked: the daemon redelivers it */
                }
                free(msgs);
            }
        }
        memset(&req, 0, sizeof(req));
        req.op = HSB_OP_BYE;
        (void)hsbus_call(c, s, &req, HSBUS_BYE_TIMEOUT_MS, &rep);
    }

    /* 3. Close the socket (waits for nng's callbacks), then free. */
    nng_close(c->sock);
    hsbus_free_client(c);
}

/* ---- sending ----------------------------------------------------------------------------- */

/*
 * Grouped sends. hsbus_send, hsbus_reply, hsbus_request and hsbus_request_async send one message
 * each, and with many callers a request per message would cost one nng exchange (and its thread
 * hand-offs, on both sides) per message. So single messages queue in the client's send group, and
 * at most HSBUS_GROUPS send requests are on the wire: whenever one of them is idle, everything
 * queued (up to a batch and the request size limit) goes out in it. An idle client therefore sends
 * at once (no linger timer, no added latency) and a busy one sends as many messages per exchange
 * as arrived during the previous one, like a database's group commit.
 *
 * The groups are driven by nng callbacks on contexts of their own (hsbus_group_cb): no caller
 * leads or waits for a group but its own. The callback that takes a group's answer records each
 * message's outcome, wakes its caller (a synchronous request is registered for its reply instead,
 * so its caller sleeps once), and starts the next group from the queue.
 *
 * One message of a group can make the daemon refuse the whole request (a malformed envelope is a
 * decode error, found before anything is routed): then each of its messages goes back to the head
 * of the queue to be sent alone, so that every caller gets the answer its own message would have
 * had.
 */
_Static_assert(HSBUS_GROUPS >= 1 && HSBUS_GROUPS <= 8, "wire_seq holds every group");

/*
 * hsbus_group_bytes is the most encoded bytes a group may carry: what one message of the largest
 * body the daemon accepts needs. The daemon's request limit (max_request) is not in hello's
 * limits, but it must admit such a message, so a group never makes a request the daemon would
 * drop (nng closes the connection on an oversized message).
 */
static size_t hsbus_group_bytes(const hsbus_client *c)
{
    return (size_t)c->max_body + HSBUS_ENV_OVERHEAD;
}

/* hsbus_group_max is the most messages of one group (the daemon's batch limit). */
static size_t hsbus_group_max(const hsbus_client *c)
{
    return c->max_batch >= 1 && c->max_batch <= HSB_BATCH_MAX ? c->max_batch : 1;
}

/* hsbus_err_is_content is true for the codes of a request refused for what it contains. */
static bool hsbus_err_is_content(hsbus_err err)
{
    return err >= HSBUS_EBADMSG && err <= HSBUS_ETOOBIG;
}

static void hsbus_sender_init(hsbus_client *c, hsbus_sender *s, const hsb_envelope *env,
                              bool request)
{
    memset(s, 0, sizeof(*s));
    s->env = env;
    s->request = request;
    pthread_cond_init(&s->w.cv, &c->cattr);
}

/* hsbus_sender_set records one message's outcome: err with its text, or res. */
static void hsbus_sender_set(hsbus_sender *s, hsbus_err err, const hsbus_result *res,
                             const char *text)
{
    s->err = err;
    if (err != HSBUS_OK) {
        snprintf(s->text, sizeof(s->text), "%s", text);
    } else {
        s->res = *res;
    }
}

/* hsbus_copy_results copies n per-message outcomes of a send's reply into results. */
static void hsbus_copy_results(const hsb_send_result *rs, size_t n, hsbus_result *results)
{
    for (size_t i = 0; i < n; i++) {
        const hsb_send_result *r = &rs[i];
        results[i].id = r->id;
        results[i].err = (hsbus_err)r->err;
        snprintf(results[i].msg, sizeof(results[i].msg), "%s",
                 r->err != HSB_OK && r->msg != NULL ? r->msg : "");
    }
}

/* hsbus_send_envs sends envs[0..n) in one request on a pooled slot and fills results[0..n).
 * Blocks up to the call timeout. */
static hsbus_err hsbus_send_envs(hsbus_client *c, const hsb_envelope *envs, size_t n,
                                 hsbus_result *results)
{
    hsb_request req;
    hsb_reply rep;
    hsbus_slot *s;
    hsbus_err err;

    err = hsbus_slot_get(c, &s);
    if (err != HSBUS_OK) {
        return err;
    }
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_SEND;
    req.u.send.msgs = (hsb_envelope *)envs; /* the encoder only reads */
    req.u.send.n_msgs = n;
    err = hsbus_call(c, s, &req, c->timeout_ms, &rep);
    if (err == HSBUS_OK && rep.u.send.n_results != n) {
        err = hsbus_fail(c, HSBUS_EBADMSG, "send: %zu results for %zu messages",
                         rep.u.send.n_results, n);
    }
    if (err == HSBUS_OK) {
        hsbus_copy_results(rep.u.send.results, n, results);
    }
    hsbus_slot_put(c, s);
    return err;
}

/* hsbus_claim_orphan_locked takes the stashed reply to message id (acking it), or returns NULL. */
static hsbus_msg *hsbus_claim_orphan_locked(hsbus_client *c, uint64_t id)
{
    hsbus_node *n, *prev = NULL;
    hsbus_msg *m;

    for (n = c->orphans.head; n != NULL; prev = n, n = n->next) {
        if (n->msg->corr == id) {
            break;
        }
    }
    if (n == NULL) {
        return NULL;
    }
    if (prev != NULL) {
        prev->next = n->next;
    } else {
        c->orphans.head = n->next;
    }
    if (c->orphans.tail == n) {
        c->orphans.tail = prev;
    }
    c->orphans.len--;
    m = n->msg;
    free(n);
    if (m->id != 0) {
        (void)hsbus_add_ack_locked(c, m->id);
    }
    return m;
}

/*
 * hsbus_finish_locked marks s answered. A request whose message was accepted becomes a waiter for
 * its reply (unless the reply overtook the answer and waits among the orphans): a synchronous
 * caller is not woken, it sleeps on until the reply comes; an asynchronous one joins the sent
 * requests the completion thread times out. Every other synchronous sender is woken; an
 * asynchronous request that failed has its callback made due.
 */
static void hsbus_finish_locked(hsbus_client *c, hsbus_sender *s)
{
    hsbus_async *a = s->w.async;
    bool accepted = s->err == HSBUS_OK && s->res.err == HSBUS_OK;
    bool wake = true;

    s->done = true;
    if (s->request) {
        c->sending--;
    }
    if (a != NULL) {
        if (s->err != HSBUS_OK) {
            hsbus_adone_push_locked(c, a, s->err, s->text);
        } else if (s->res.err != HSBUS_OK) {
            hsbus_adone_push_locked(c, a, s->res.err, s->res.msg[0] != '\0' ? s->res.msg : NULL);
        } else if (c->closing || c->lost) {
            hsbus_adone_push_locked(c, a, HSBUS_ECLOSED, "client closed or connection lost");
        } else {
            s->w.id = s->res.id;
            s->w.reply = hsbus_claim_orphan_locked(c, s->res.id);
            if (s->w.reply != NULL) {
                hsbus_adone_push_locked(c, a, HSBUS_OK, NULL);
            } else {
                hsbus_add_waiter_locked(c, &s->w);
                hsbus_apend_insert_locked(c, a);
                pthread_cond_signal(&c->async_cv); /* its deadline may now be the nearest */
            }
        }
        return;
    }
    if (s->request && accepted) {
        s->w.id = s->res.id;
        s->w.reply = hsbus_claim_orphan_locked(c, s->res.id);
        if (s->w.reply == NULL) {
            hsbus_add_waiter_locked(c, &s->w);
            /* An expired request must return ETIMEDOUT; with the client closing or lost no reply
             * will come. */
            wake = s->expired || c->closing || c->lost;
        }
    }
    if (wake) {
        pthread_cond_signal(&s->w.cv); /* s may be gone as soon as c->mtx is released */
    }
}

/* hsbus_enqueue_locked appends s to the send group's queue. */
static void hsbus_enqueue_locked(hsbus_client *c, hsbus_sender *s)
{
    if (s->request) {
        c->sending++;
        pthread_cond_broadcast(&c->queue_cv); /* a receiver paused on a full queue must fetch */
    }
    s->resend_until = hsbus_now_ms() + c->timeout_ms;
    s->next = NULL;
    if (c->group_tail != NULL) {
        c->group_tail->next = s;
    } else {
        c->group_head = s;
    }
    c->group_tail = s;
}

/* hsbus_idle_group_locked returns a group that is not on the wire, or NULL. */
static hsbus_group *hsbus_idle_group_locked(hsbus_client *c)
{
    for (unsigned i = 0; i < HSBUS_GROUPS; i++) {
        if (!c->groups[i].busy) {
            return &c->groups[i];
        }
    }
    return NULL;
}

/* hsbus_take_group_locked moves the head of the queue into g: one solo message, or as many as the
 * batch and byte limits allow, stopping before a solo one. */
static void hsbus_take_group_locked(hsbus_client *c, hsbus_group *g)
{
    size_t max = hsbus_group_max(c), bytes = 0;

    g->n = 0;
    while (c->group_head != NULL && g->n < max) {
        hsbus_sender *s = c->group_head;
        size_t need = hsb_enc_envelope_bound(s->env);
        if (g->n > 0 && (s->solo || bytes + need > hsbus_group_bytes(c))) {
            break;
        }
        c->group_head = s->next;
        if (c->group_head == NULL) {
            c->group_tail = NULL;
        }
        g->batch[g->n++] = s;
        bytes += need;
        if (s->solo) {
            break;
        }
    }
}

static void hsbus_group_end(hsbus_client *c, hsbus_group *g, hsbus_err err, const hsb_reply *rep);

/* hsbus_group_start encodes g's messages and hands the send to nng; its answer comes to
 * hsbus_group_cb. Any thread, without c->mtx; does not block. */
static void hsbus_group_start(hsbus_client *c, hsbus_group *g)
{
    hsb_request req;
    nng_msg *m;
    hsbus_err err;

    for (size_t i = 0; i < g->n; i++) {
        g->envs[i] = *g->batch[i]->env;
    }
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_SEND;
    req.u.send.msgs = g->envs;
    req.u.send.n_msgs = g->n;
    g->slot.refused = false;
    g->receiving = false;
    g->timeout_ms = c->timeout_ms;
    err = hsbus_encode(c, &req, &m);
    if (err != HSBUS_OK) {
        hsbus_group_end(c, g, err, NULL);
        return;
    }
    nng_aio_set_msg(g->slot.aio, m);
    nng_aio_set_timeout(g->slot.aio, g->timeout_ms);
    nng_ctx_send(g->slot.ctx, g->slot.aio);
}

/*
 * hsbus_kick_locked sends the queued messages in every idle group. When the client is closing or
 * lost, queued messages fail instead (HSBUS_ECLOSED). Called and returns with c->mtx held; drops
 * it while a group is encoded and handed to nng. The calling thread's error text is kept.
 */
static void hsbus_kick_locked(hsbus_client *c)
{
    hsbus_group *g;

    while (c->group_head != NULL) {
        if (c->closing || c->lost) {
            hsbus_sender *s;
            while ((s = c->group_head) != NULL) {
                c->group_head = s->next;
                hsbus_sender_set(s, HSBUS_ECLOSED, NULL, "client closed or connection lost");
                hsbus_finish_locked(c, s);
            }
            c->group_tail = NULL;
            return;
        }
        if ((g = hsbus_idle_group_locked(c)) == NULL) {
            return;
        }
        hsbus_take_group_locked(c, g);
        g->busy = true;
        g->seq = ++c->group_seq;
        c->wire_seq[c->n_wire++] = g->seq;
        pthread_mutex_unlock(&c->mtx);
        __typeof__(hsbus_tl_err) saved = hsbus_tl_err;
        hsbus_group_start(c, g);
        hsbus_tl_err = saved;
        pthread_mutex_lock(&c->mtx);
    }
}

/*
 * hsbus_group_end records the outcome of g's messages (err; HSBUS_OK: rep holds their results),
 * finishes them, frees g and sends what queued meanwhile. A group refused as a whole for its
 * content goes back to the head of the queue one message at a time (each solo), unless the call
 * timeout has passed since it was queued (then HSBUS_ETIMEDOUT: none was routed, so a retry is
 * safe). Runs on an nng thread (or the thread whose encode failed), without c->mtx.
 */
static void hsbus_group_end(hsbus_client *c, hsbus_group *g, hsbus_err err, const hsb_reply *rep)
{
    hsbus_result res;
    hsbus_sender *resend = NULL, **tail = &resend, *last = NULL;
    bool refused = err != HSBUS_OK && g->n > 1 && g->slot.refused && hsbus_err_is_content(err);
    int64_t now = hsbus_now_ms();
    size_t done = 0;

    if (err == HSBUS_OK && rep->u.send.n_results != g->n) {
        err = hsbus_fail(c, HSBUS_EBADMSG, "send: %zu results for %zu messages",
                         rep->u.send.n_results, g->n);
    }
    for (size_t i = 0; i < g->n; i++) {
        hsbus_sender *s = g->batch[i];
        if (refused && now < s->resend_until) {
            s->solo = true;
            *tail = last = s;
            tail = &s->next;
            continue;
        }
        if (refused) {
            hsbus_sender_set(s, HSBUS_ETIMEDOUT, NULL,
                             "not sent: its group was refused for another message and the "
                             "resends ran out of time");
        } else if (err != HSBUS_OK) {
            hsbus_sender_set(s, err, NULL, hsbus_errmsg(c));
        } else {
            hsbus_copy_results(&rep->u.send.results[i], 1, &res);
            hsbus_sender_set(s, HSBUS_OK, &res, NULL);
        }
        g->batch[done++] = s;
    }
    pthread_mutex_lock(&c->mtx);
    for (unsigned i = 0; i < c->n_wire; i++) {
        if (c->wire_seq[i] == g->seq) {
            c->wire_seq[i] = c->wire_seq[--c->n_wire];
            break;
        }
    }
    if (resend != NULL) {
        *tail = c->group_head;
        c->group_head = resend;
        if (c->group_tail == NULL) {
            c->group_tail = last;
        }
    }
    for (size_t i = 0; i < done; i++) {
        hsbus_finish_locked(c, g->batch[i]); /* batch[i] may be gone once its thread wakes */
    }
    g->busy = false;
    g->n = 0;
    if (c->orphans.len > 0) {
        hsbus_release_orphans_locked(c); /* what this group's answer leaves unclaimed */
    }
    pthread_cond_broadcast(&c->group_cv);
    hsbus_kick_locked(c);
    pthread_mutex_unlock(&c->mtx);
}

/* hsbus_group_cb drives a group on nng's thread: the send went out (now receive its answer), or
 * the answer came, or either failed. */
static void hsbus_group_cb(void *arg)
{
    hsbus_group *g = arg;
    hsbus_client *c = g->client;
    nng_aio *aio = g->slot.aio;
    int rv = nng_aio_result(aio);
    hsb_reply rep;
    hsbus_err err;
    nng_msg *m;

    if (!g->receiving && rv == 0) {
        g->receiving = true;
        nng_aio_set_timeout(aio, g->timeout_ms);
        nng_ctx_recv(g->slot.ctx, aio);
        return;
    }
    if (rv != 0) {
        if (!g->receiving) {
            nng_msg_free(nng_aio_get_msg(aio)); /* a failed send leaves the message with us */
            nng_aio_set_msg(aio, NULL);
        }
        hsbus_group_end(c, g, hsbus_fail_nng(c, rv, "send"), NULL);
        return;
    }
    m = nng_aio_get_msg(aio);
    nng_aio_set_msg(aio, NULL);
    err = hsbus_decode(c, &g->slot, HSB_OP_SEND, m, &rep);
    hsbus_group_end(c, g, err, err == HSBUS_OK ? &rep : NULL);
}

/*
 * hsbus_group_run queues s in the send group and returns when its message is answered or, for a
 * request, when its reply came, the client closed or deadline_ms passed (only once the message is
 * answered: a queued message cannot be withdrawn; the group's call timeout bounds that wait).
 * Blocks. Returns HSBUS_ECLOSED, HSBUS_ETIMEDOUT (no reply in time) or HSBUS_OK; the message's own
 * outcome is in s.
 */
static hsbus_err hsbus_group_run(hsbus_client *c, hsbus_sender *s, int64_t deadline_ms)
{
    struct timespec until = hsbus_abstime(deadline_ms);
    hsbus_err err = HSBUS_OK;

    pthread_mutex_lock(&c->mtx);
    if (c->closing || c->lost) {
        pthread_mutex_unlock(&c->mtx);
        return HSBUS_ECLOSED;
    }
    hsbus_enqueue_locked(c, s);
    /* Alone in the queue: give the CPU away once before sending. Callers that are already
     * runnable (typically requesters woken by the same batch of replies) then join this group
     * instead of each starting the next one; with nothing else runnable sched_yield returns at
     * once, so an idle client adds no delay. Measured: 22 % fewer send requests and +12 % round
     * trips/s in reqrep-c16, and reqrep-c1 not slower (docs/rationale.md). */
    if (c->group_head == s && c->group_tail == s && hsbus_idle_group_locked(c) != NULL) {
        pthread_mutex_unlock(&c->mtx);
        sched_yield();
        pthread_mutex_lock(&c->mtx);
    }
    hsbus_kick_locked(c);
    for (;;) {
        if (!s->done) {
            /* Queued or on the wire: its finish wakes us. A request notes when its deadline
             * passes, so that the finish wakes it rather than leaving it registered for a reply
             * it no longer waits for. */
            if (s->request && !s->expired) {
                if (pthread_cond_timedwait(&s->w.cv, &c->mtx, &until) == ETIMEDOUT) {
                    s->expired = true;
                }
            } else {
                pthread_cond_wait(&s->w.cv, &c->mtx);
            }
            continue;
        }
        if (!s->request || s->err != HSBUS_OK || s->res.err != HSBUS_OK || s->w.reply != NULL) {
            break;
        }
        if (c->closing || c->lost) {
            err = HSBUS_ECLOSED;
            break;
        }
        if (pthread_cond_timedwait(&s->w.cv, &c->mtx, &until) == ETIMEDOUT && s->w.reply == NULL) {
            err = HSBUS_ETIMEDOUT;
            break;
        }
    }
    if (s->request && s->err == HSBUS_OK && s->res.err == HSBUS_OK) {
        hsbus_remove_waiter_locked(c, &s->w);
    }
    pthread_mutex_unlock(&c->mtx);
    return err;
}

/* hsbus_sender_result turns an answered sender's outcome into this thread's return and text. */
static hsbus_err hsbus_sender_result(hsbus_client *c, const hsbus_sender *s)
{
    if (s->err != HSBUS_OK) {
        return hsbus_fail(c, s->err, "%s", s->text);
    }
    if (s->res.err != HSBUS_OK) {
        return hsbus_fail(c, s->res.err, "%s",
                          s->res.msg[0] != '\0' ? s->res.msg : hsbus_strerror(s->res.err));
    }
    return HSBUS_OK;
}

static hsbus_err hsbus_send_one(hsbus_client *c, const hsbus_msg *msg, uint64_t *id)
{
    hsb_envelope env;
    hsbus_sender s;
    hsbus_err err;

    hsbus_env_from_msg(&env, msg);
    hsbus_sender_init(c, &s, &env, false);
    err = hsbus_group_run(c, &s, 0);
    if (err == HSBUS_ECLOSED) {
        err = hsbus_fail(c, err, "client closed or connection lost");
    } else {
        err = hsbus_sender_result(c, &s);
    }
    if (err == HSBUS_OK && id != NULL) {
        *id = s.res.id;
    }
    pthread_cond_destroy(&s.w.cv);
    return err;
}

HSBUS_API hsbus_err hsbus_send(hsbus_client *client, const hsbus_msg *msg, uint64_t *id)
{
    if (client == NULL || msg == NULL) {
        return HSBUS_EINVAL;
    }
    return hsbus_send_one(client, msg, id);
}

HSBUS_API hsbus_err hsbus_send_batch(hsbus_client *client, const hsbus_msg *msgs, size_t n,
                                     hsbus_result *results)
{
    hsb_envelope *envs;
    hsbus_err err;

    if (client == NULL || msgs == NULL || results == NULL || n == 0 || n > HSB_BATCH_MAX) {
        return HSBUS_EINVAL;
    }
    envs = malloc(n * sizeof(*envs));
    if (envs == NULL) {
        return hsbus_fail(client, HSBUS_ENOMEM, "no memory for %zu envelopes", n);
    }
    for (size_t i = 0; i < n; i++) {
        hsbus_env_from_msg(&envs[i], &msgs[i]);
    }
    err = hsbus_send_envs(client, envs, n, results);
    free(envs);
    return err;
}

HSBUS_API hsbus_err hsbus_reply(hsbus_client *client, const hsbus_msg *req, const void *body,
                                size_t len)
{
    hsbus_msg m;

    if (client == NULL || req == NULL || req->id == 0 || (body == NULL && len > 0)) {
        return HSBUS_EINVAL;
    }
    hsbus_msg_init(&m);
    m.corr = req->id;
    hsbus_copy_name(m.to, sizeof(m.to), req->from, sizeof(req->from));
    m.prio = req->prio;
    m.body = (uint8_t *)body; /* only read; m is never cleared */
    m.body_len = len;
    return hsbus_send_one(client, &m, NULL);
}

/* hsbus_sys_error reads {err, msg} from a sys.error body into an error code and its text. */
static hsbus_err hsbus_sys_error(hsbus_client *c, const hsbus_msg *m)
{
    msgpack_unpacked up;
    hsbus_err err = HSBUS_EINTERNAL;
    char text[HSB_REASON_MAX + 1] = "";
    size_t off = 0;

    msgpack_unpacked_init(&up);
    if (m->body != NULL &&
        msgpack_unpack_next(&up, (const char *)m->body, m->body_len, &off) ==
            MSGPACK_UNPACK_SUCCESS &&
        up.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < up.data.via.map.size; i++) {
            const msgpack_object_kv *kv = &up.data.via.map.ptr[i];
            if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_STR) {
                continue;
            }
            if (kv->key.via.str.size == 3 && memcmp(kv->key.via.str.ptr, "err", 3) == 0) {
                err = (hsbus_err)hsb_err_from_wire(kv->val.via.str.ptr, kv->val.via.str.size);
            } else if (kv->key.via.str.size == 3 && memcmp(kv->key.via.str.ptr, "msg", 3) == 0) {
                int len = kv->val.via.str.size < sizeof(text) - 1 ? (int)kv->val.via.str.size
                                                                  : (int)sizeof(text) - 1;
                snprintf(text, sizeof(text), "%.*s", len, kv->val.via.str.ptr);
            }
        }
    }
    msgpack_unpacked_destroy(&up);
    if (err == HSBUS_OK) {
        err = HSBUS_EINTERNAL;
    }
    return hsbus_fail(c, err, "%s", text[0] != '\0' ? text : hsbus_strerror(err));
}

/* hsbus_take_reply turns a reply that is a sys.error into its code and text (freeing it). */
static hsbus_err hsbus_take_reply(hsbus_client *c, hsbus_msg **reply)
{
    hsbus_err err = HSBUS_OK;

    if (strcmp((*reply)->type, "sys.error") == 0) {
        err = hsbus_sys_error(c, *reply);
        hsbus_msg_free(reply);
    }
    return err;
}

/* hsbus_request_msg makes the envelope of a request: msg with its ttl defaulting to timeout_ms,
 * so the daemon drops it when nobody could still be waiting. req must outlive env. */
static void hsbus_request_msg(const hsbus_msg *msg, int timeout_ms, hsbus_msg *req,
                              hsb_envelope *env)
{
    *req = *msg; /* shallow: the body is only read */
    if (req->ttl_ms == 0) {
        req->ttl_ms = (uint32_t)timeout_ms;
    }
    hsbus_env_from_msg(env, req);
}

HSBUS_API hsbus_err hsbus_request(hsbus_client *client, const hsbus_msg *msg, int timeout_ms,
                                  hsbus_msg **reply)
{
    hsbus_client *c = client;
    hsb_envelope env;
    hsbus_sender s;
    hsbus_msg req;
    hsbus_err err;

    if (reply != NULL) {
        *reply = NULL;
    }
    if (c == NULL || msg == NULL || reply == NULL) {
        return HSBUS_EINVAL;
    }
    if (timeout_ms <= 0) {
        timeout_ms = c->timeout_ms;
    }
    err = hsbus_ensure(c, 1, 0);
    if (err != HSBUS_OK) {
        return err;
    }
    hsbus_request_msg(msg, timeout_ms, &req, &env);
    hsbus_sender_init(c, &s, &env, true);
    err = hsbus_group_run(c, &s, hsbus_now_ms() + timeout_ms);
    if (err == HSBUS_ECLOSED) {
        err = hsbus_fail(c, err, "closed or connection lost while waiting");
    } else if (err == HSBUS_ETIMEDOUT) {
        err = hsbus_fail(c, err, "no reply to message %llu in %d ms", (unsigned long long)s.res.id,
                         timeout_ms);
    } else if ((err = hsbus_sender_result(c, &s)) == HSBUS_OK &&
               (err = hsbus_take_reply(c, &s.w.reply)) == HSBUS_OK) {
        *reply = s.w.reply;
    }
    pthread_cond_destroy(&s.w.cv);
    return err;
}

/* ---- asynchronous requests --------------------------------------------------------------- */

/*
 * hsbus_request_async queues its request in the send group and returns. Its callback runs on the
 * client's completion thread (hsbus_async_main), one callback at a time: when the reply is routed
 * to it (hsbus_route_reply_locked), when its send fails (hsbus_finish_locked), when its deadline
 * passes, or when the client closes or is lost. Requests made by callbacks are only queued while
 * the completion thread runs a batch of callbacks (hsbus_tl_cork) and go out together after it:
 * 16 replies fetched together become one send request of 16 new requests.
 */
static _Thread_local const hsbus_client *hsbus_tl_cork;

/* hsbus_async_free frees an async request, its message copy and a reply it still holds. */
static void hsbus_async_free(hsbus_async *a)
{
    hsbus_msg_free(&a->s.w.reply);
    free(a->msg.body);
    free(a);
}

/* hsbus_async_call runs a's callback with its outcome (and this thread's error text set) and
 * frees it. Completion thread, without c->mtx. */
static void hsbus_async_call(hsbus_client *c, hsbus_async *a)
{
    hsbus_msg *reply = NULL;
    hsbus_err err = a->err;

    if (err == HSBUS_OK) {
        err = hsbus_take_reply(c, &a->s.w.reply);
        reply = a->s.w.reply;
        a->s.w.reply = NULL;
    } else {
        (void)hsbus_fail(c, err, "%s", a->text);
    }
    a->fn(c, err, reply, a->arg);
    hsbus_async_free(a);
}

/*
 * hsbus_async_main is the completion thread: it fails sent requests whose deadline passed (or all
 * of them once the client is closing or lost), runs due callbacks in order, then sends what they
 * queued. It ends when the client is closing and every async request has had its callback.
 */
static void *hsbus_async_main(void *arg)
{
    hsbus_client *c = arg;
    hsbus_async *a, *due;
    size_t ran;

    pthread_mutex_lock(&c->mtx);
    for (;;) {
        int64_t now = hsbus_now_ms();
        while ((a = c->apend_head) != NULL && (a->deadline_ms <= now || c->closing || c->lost)) {
            hsbus_apend_unlink_locked(c, a);
            hsbus_remove_waiter_locked(c, &a->s.w);
            if (c->closing || c->lost) {
                hsbus_adone_push_locked(c, a, HSBUS_ECLOSED,
                                        "closed or connection lost while waiting");
            } else {
                char text[96];
                snprintf(text, sizeof(text), "no reply to message %llu in %d ms",
                         (unsigned long long)a->s.w.id, a->timeout_ms);
                hsbus_adone_push_locked(c, a, HSBUS_ETIMEDOUT, text);
            }
        }
        if ((due = c->adone_head) != NULL) {
            c->adone_head = c->adone_tail = NULL;
            pthread_mutex_unlock(&c->mtx);
            hsbus_tl_cork = c;
            for (ran = 0; due != NULL; ran++) {
                a = due;
                due = a->next;
                hsbus_async_call(c, a);
            }
            hsbus_tl_cork = NULL;
            pthread_mutex_lock(&c->mtx);
            c->n_async -= ran;
            hsbus_kick_locked(c); /* what the callbacks queued */
            pthread_cond_broadcast(&c->group_cv);
            continue;
        }
        if (c->closing && c->n_async == 0) {
            break;
        }
        if (c->apend_head != NULL && !c->closing && !c->lost) {
            struct timespec until = hsbus_abstime(c->apend_head->deadline_ms);
            (void)pthread_cond_timedwait(&c->async_cv, &c->mtx, &until);
        } else {
            pthread_cond_wait(&c->async_cv, &c->mtx);
        }
    }
    pthread_mutex_unlock(&c->mtx);
    return NULL;
}

/* hsbus_ensure_async starts the completion thread once. Serialised with hsbus_close by
 * start_mtx, like hsbus_ensure. */
static hsbus_err hsbus_ensure_async(hsbus_client *c)
{
    hsbus_err err = HSBUS_OK;

    pthread_mutex_lock(&c->start_mtx);
    pthread_mutex_lock(&c->mtx);
    if (c->closing || c->lost) {
        err = hsbus_fail(c, HSBUS_ECLOSED, "client closed or connection lost");
    } else if (!c->athread_on) {
        if (pthread_create(&c->athread, NULL, hsbus_async_main, c) != 0) {
            err = hsbus_fail(c, HSBUS_EIO, "starting the completion thread failed");
        } else {
            c->athread_on = true;
        }
    }
    pthread_mutex_unlock(&c->mtx);
    pthread_mutex_unlock(&c->start_mtx);
    return err;
}

HSBUS_API hsbus_err hsbus_request_async(hsbus_client *client, const hsbus_msg *msg, int timeout_ms,
                                        hsbus_reply_fn fn, void *arg)
{
    hsbus_client *c = client;
    hsbus_async *a;
    hsbus_err err;

    if (c == NULL || msg == NULL || fn == NULL || (msg->body == NULL && msg->body_len > 0)) {
        return HSBUS_EINVAL;
    }
    if (timeout_ms <= 0) {
        timeout_ms = c->timeout_ms;
    }
    if ((err = hsbus_ensure(c, 1, 0)) != HSBUS_OK || (err = hsbus_ensure_async(c)) != HSBUS_OK) {
        return err;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return hsbus_fail(c, HSBUS_ENOMEM, "no memory for a request");
    }
    hsbus_request_msg(msg, timeout_ms, &a->msg, &a->env);
    a->msg.body = NULL;
    if (msg->body_len > 0) {
        a->msg.body = malloc(msg->body_len);
        if (a->msg.body == NULL) {
            free(a);
            return hsbus_fail(c, HSBUS_ENOMEM, "no memory for a %zu-byte body", msg->body_len);
        }
        memcpy(a->msg.body, msg->body, msg->body_len);
    }
    hsbus_env_from_msg(&a->env, &a->msg); /* again: the envelope must point at the copy */
    a->s.env = &a->env;
    a->s.request = true;
    a->s.w.async = a;
    a->fn = fn;
    a->arg = arg;
    a->timeout_ms = timeout_ms;
    a->deadline_ms = hsbus_now_ms() + timeout_ms;

    pthread_mutex_lock(&c->mtx);
    if (c->closing || c->lost) {
        pthread_mutex_unlock(&c->mtx);
        hsbus_async_free(a);
        return hsbus_fail(c, HSBUS_ECLOSED, "client closed or connection lost");
    }
    c->n_async++;
    hsbus_enqueue_locked(c, &a->s);
    if (hsbus_tl_cork != c) {
        hsbus_kick_locked(c);
    }
    pthread_mutex_unlock(&c->mtx);
    return HSBUS_OK;
}

/* ---- fetching ---------------------------------------------------------------------------- */

/* hsbus_take_queued moves up to max queued messages into msgs; returns how many. */
static size_t hsbus_take_queued_locked(hsbus_client *c, size_t max, hsbus_msg **msgs)
{
    size_t got = 0;
    hsbus_node *n;

    while (got < max && (n = hsbus_list_pop(&c->queue)) != NULL) {
        msgs[got++] = n->msg;
        free(n);
    }
    if (got > 0) {
        pthread_cond_broadcast(&c->queue_cv); /* room for the receivers */
    }
    return got;
}

HSBUS_API hsbus_err hsbus_fetch(hsbus_client *client, size_t max, int wait_ms, hsbus_msg **msgs,
                                size_t *n)
{
    hsbus_client *c = client;
    hsbus_msg **got = NULL;
    size_t n_got = 0;
    hsbus_slot *s;
    struct timespec until;
    hsbus_err err = HSBUS_OK;
    bool direct;

    if (n != NULL) {
        *n = 0;
    }
    if (c == NULL || msgs == NULL || n == NULL || max == 0 || max > HSB_BATCH_MAX || wait_ms < 0 ||
        wait_ms > HSBUS_WAIT_MAX_MS) {
        return HSBUS_EINVAL;
    }
    pthread_mutex_lock(&c->mtx);
    if (c->handler != NULL && c->n_workers > 0) {
        pthread_mutex_unlock(&c->mtx);
        return hsbus_fail(c, HSBUS_EINVAL, "a handler receives this client's messages");
    }
    *n = hsbus_take_queued_locked(c, max, msgs);
    direct = c->n_recvs == 0;
    if (*n == 0 && !direct) {
        until = hsbus_abstime(hsbus_now_ms() + wait_ms);
        while (c->queue.len == 0 && !c->closing && !c->lost) {
            if (pthread_cond_timedwait(&c->queue_cv, &c->mtx, &until) == ETIMEDOUT) {
                break;
            }
        }
        *n = hsbus_take_queued_locked(c, max, msgs);
        if (*n == 0 && (c->closing || c->lost)) {
            err = HSBUS_ECLOSED;
        }
    }
    pthread_mutex_unlock(&c->mtx);
    if (err != HSBUS_OK) {
        return hsbus_fail(c, err, "client closed or connection lost");
    }
    if (*n > 0 || !direct) {
        return HSBUS_OK;
    }

    /* No receiver thread: fetch ourselves, carrying the pending acks. */
    err = hsbus_slot_get(c, &s);
    if (err != HSBUS_OK) {
        return err;
    }
    err = hsbus_do_fetch(c, s, (uint32_t)max, (uint32_t)wait_ms, &got, &n_got);
    hsbus_slot_put(c, s);
    if (err != HSBUS_OK) {
        return err;
    }
    for (size_t i = 0; i < n_got; i++) {
        hsbus_route r;

        pthread_mutex_lock(&c->mtx);
        r = hsbus_route_reply_locked(c, got[i], true);
        pthread_mutex_unlock(&c->mtx);
        if (r == HSBUS_ROUTE_USER) {
            msgs[(*n)++] = got[i];
        }
    }
    free(got);
    return HSBUS_OK;
}

HSBUS_API hsbus_err hsbus_flush_acks(hsbus_client *client)
{
    hsbus_msg **got = NULL;
    size_t n_got = 0;
    hsbus_slot *s;
    hsbus_err err;

    if (client == NULL) {
        return HSBUS_EINVAL;
    }
    pthread_mutex_lock(&client->mtx);
    if (client->n_acks == 0 && client->n_nacks == 0) {
        pthread_mutex_unlock(&client->mtx);
        return HSBUS_OK;
    }
    pthread_mutex_unlock(&client->mtx);
    err = hsbus_slot_get(client, &s);
    if (err != HSBUS_OK) {
        return err;
    }
    err = hsbus_do_fetch(client, s, 1, 0, &got, &n_got);
    hsbus_slot_put(client, s);
    if (err == HSBUS_OK) {
        /* Whatever came back is queued (never handled on this thread). */
        hsbus_dispatch(client, got, n_got);
    }
    return err;
}
