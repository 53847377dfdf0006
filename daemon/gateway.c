/*
 * daemon/gateway.c - agent protocol v1 on nng REP contexts (tcp, tls) and on sp_ipc (ipc).
 *
 * nng context states: RECV (an nng receive is pending), LOOP (posted to the inbox, or parked by
 * the loop), SEND (an nng send is pending). Only the thread that owns the current state touches
 * the context: nng threads in RECV and SEND, the loop thread in LOOP. A context of the ipc
 * listener (sc != NULL) lives on the loop thread only: taken from a free list for one request,
 * returned when its reply is written.
 */
#include "daemon/gateway.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <sodium.h>

#include "daemon/log.h"
#include "daemon/sp_ipc.h"
#include "proto/codec.h"
#include "proto/nng_write.h"

#define GW_CONN_BUCKETS 1024

typedef enum gw_ctx_state {
    GW_CTX_RECV,
    GW_CTX_LOOP,
    GW_CTX_SEND,
} gw_ctx_state;

typedef struct gw_conn gw_conn;

typedef struct gw_ctx {
    inbox_item item; /* first: the inbox hands us back this pointer */
    gw *g;
    nng_ctx ctx;
    nng_aio *aio;
    gw_ctx_state state;
    hsb_dec dec;
    hsb_request req;
    hsb_err derr;
    nng_pipe pipe;                /* nng contexts */
    uint32_t pipe_id;             /* the connection: an nng pipe id, or an sp_conn id */
    sp_conn *sc;                  /* ipc contexts, while a request is answered (a reference) */
    uint8_t bt[SP_BACKTRACE_MAX]; /* ipc contexts: the request's backtrace */
    uint8_t bt_len;
    gw_conn *conn;                /* while parked */
    struct gw_ctx *pprev, *pnext; /* the conn's parked list */
    hsb_send_result *results;     /* kept between requests, grown on demand */
    size_t results_cap;
    size_t n_results;
    struct gw_ctx *all_next;
    struct gw_ctx *free_next; /* ipc contexts: the free list */
} gw_ctx;

struct gw_conn {
    uint32_t pipe;
    bus_client *client;
    gw_ctx *parked;
    gw_conn *hnext;
};

typedef struct gw_pipe_event {
    inbox_item item;
    uint32_t pipe;
} gw_pipe_event;

struct gw {
    nng_socket sock;
    inbox *ib;
    bus *b;
    uint32_t want_ready; /* contexts to keep receiving */
    uint32_t max_contexts;
    uint32_t max_body;
    gw_ctx *all;
    uint32_t n_ctx;
    sp_server *sp;     /* the ipc listener, when listen is ipc:// */
    gw_ctx *sp_free;   /* idle ipc contexts */
    uint32_t n_sp_ctx; /* ipc contexts in all (bounded by max_contexts) */
    uint32_t n_parked;
    uint32_t n_parked_nng; /* of them nng contexts: gw_grow keeps contexts ready past these */
    bool closed;           /* draining: new requests get E_SHUTDOWN */
    bool stopped;          /* socket closed: contexts are idle */
    gw_token_fn token_fn;
    void *token_arg;
    gw_conn *conns[GW_CONN_BUCKETS];
    gw_stats stats;
};

/* ---- nng side ---------------------------------------------------------------------------- */

static void gw_ctx_recv(gw_ctx *c)
{
    c->state = GW_CTX_RECV;
    nng_ctx_recv(c->ctx, c->aio);
}

static void gw_ctx_cb(void *arg)
{
    gw_ctx *c = arg;
    int rv = nng_aio_result(c->aio);

    if (c->state == GW_CTX_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
                c->state = GW_CTX_LOOP; /* idle until gw_free */
                return;
            }
        }
        gw_ctx_recv(c);
        return;
    }
    /* GW_CTX_RECV */
    if (rv != 0) {
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED) {
            c->state = GW_CTX_LOOP;
            return;
        }
        gw_ctx_recv(c);
        return;
    }
    nng_msg *m = nng_aio_get_msg(c->aio);
    c->pipe = nng_msg_get_pipe(m);
    c->pipe_id = (uint32_t)nng_pipe_id(c->pipe);
    hsb_dec_reset(&c->dec);
    c->derr = hsb_dec_request(&c->dec, nng_msg_body(m), nng_msg_len(m), &c->req);
    nng_msg_free(m); /* the decoder copied what it kept */
    c->state = GW_CTX_LOOP;
    inbox_post(c->g->ib, &c->item);
}

static void gw_pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    gw *g = arg;
    (void)ev;
    gw_pipe_event *e = malloc(sizeof(*e));
    if (e == NULL) {
        log_error("gw_pipe_event_lost", "pipe=%" PRIu32 " reason=ENOMEM", nng_pipe_id(p));
        return;
    }
    e->item.kind = GW_ITEM_PIPE_CLOSED;
    e->pipe = (uint32_t)nng_pipe_id(p);
    inbox_post(g->ib, &e->item);
}

/* gw_ctx_new allocates a context with its decoder (not yet on the gateway's list), or NULL. */
static gw_ctx *gw_ctx_new(gw *g)
{
    gw_ctx *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return NULL;
    }
    c->g = g;
    c->item.kind = GW_ITEM_REQUEST;
    if (hsb_dec_init(&c->dec) != HSB_OK) {
        free(c);
        return NULL;
    }
    c->dec.max_body = g->max_body;
    return c;
}

static void gw_ctx_free(gw_ctx *c)
{
    if (c->aio != NULL) {
        nng_aio_free(c->aio);
    }
    hsb_dec_fini(&c->dec);
    free(c->results);
    free(c);
}

static void gw_ctx_link(gw *g, gw_ctx *c)
{
    c->all_next = g->all;
    g->all = c;
}

static hsb_err gw_ctx_open(gw *g)
{
    gw_ctx *c = gw_ctx_new(g);
    if (c == NULL) {
        return HSB_ENOMEM;
    }
    if (nng_aio_alloc(&c->aio, gw_ctx_cb, c) != 0) {
        gw_ctx_free(c);
        return HSB_ENOMEM;
    }
    if (nng_ctx_open(&c->ctx, g->sock) != 0) {
        gw_ctx_free(c);
        return HSB_EIO;
    }
    gw_ctx_link(g, c);
    g->n_ctx++;
    g->stats.contexts = g->n_ctx + g->n_sp_ctx;
    gw_ctx_recv(c);
    return HSB_OK;
}

/* Keep want_ready contexts receiving while fetches are parked. Loop thread. */
static void gw_grow(gw *g)
{
    while (!g->closed && g->n_ctx - g->n_parked_nng < g->want_ready && g->n_ctx < g->max_contexts) {
        if (gw_ctx_open(g) != HSB_OK) {
            log_warn("gw_context_open_failed", "contexts=%" PRIu32, g->n_ctx);
            return;
        }
    }
}

/* ---- replies ----------------------------------------------------------------------------- */

/* gw_sp_done returns an ipc context to the free list once its request is answered. */
static void gw_sp_done(gw *g, gw_ctx *c)
{
    sp_conn_unref(c->sc);
    c->sc = NULL;
    c->free_next = g->sp_free;
    g->sp_free = c;
    sp_server_kick(g->sp); /* a connection may be waiting for a free context */
}

static void gw_reply_send(gw_ctx *c, nng_msg *m)
{
    if (c->sc != NULL) {
        sp_conn_reply(c->sc, c->bt, c->bt_len, nng_msg_body(m), nng_msg_len(m));
        nng_msg_free(m);
        gw_sp_done(c->g, c);
        return;
    }
    c->state = GW_CTX_SEND;
    nng_aio_set_msg(c->aio, m);
    nng_ctx_send(c->ctx, c->aio);
}

/* gw_reply_error answers the request as a whole with {ok: false, err, msg}. */
static void gw_reply_error(gw_ctx *c, hsb_err err, const char *msg)
{
    hsb_nng_writer w;
    msgpack_packer pk;
    if (hsb_nng_writer_begin(&w, &pk, 128) != 0 || hsb_enc_error_reply(&pk, err, msg) != HSB_OK) {
        hsb_nng_writer_abort(&w);
        /* No memory for an answer: the client's REQ will time out and retry; re-arm. */
        if (c->sc != NULL) {
            gw_sp_done(c->g, c);
        } else {
            gw_ctx_recv(c);
        }
        return;
    }
    gw_reply_send(c, hsb_nng_writer_end(&w));
}

/* gw_reply answers with rep, encoded into a message sized about hint bytes. */
static void gw_reply(gw_ctx *c, const hsb_reply *rep, size_t hint)
{
    hsb_nng_writer w;
    msgpack_packer pk;
    if (hsb_nng_writer_begin(&w, &pk, hint) != 0 || hsb_enc_reply(&pk, rep) != HSB_OK) {
        hsb_nng_writer_abort(&w);
        gw_reply_error(c, HSB_EINTERNAL, "out of memory encoding the reply");
        return;
    }
    gw_reply_send(c, hsb_nng_writer_end(&w));
}

static void gw_reply_simple_ok(gw_ctx *c, hsb_op op)
{
    hsb_reply rep;
    memset(&rep, 0, sizeof(rep));
    rep.op = op;
    rep.ok = true;
    gw_reply(c, &rep, 16);
}

static void gw_reply_send_results(gw_ctx *c)
{
    hsb_nng_writer w;
    msgpack_packer pk;
    /* {id: u64} is 13 bytes; an error result is longer and makes the writer grow. */
    hsb_err err = hsb_nng_writer_begin(&w, &pk, 16 + c->n_results * 13) == 0
                      ? hsb_enc_send_reply_begin(&pk, c->n_results)
                      : HSB_ENOMEM;
    for (size_t i = 0; err == HSB_OK && i < c->n_results; i++) {
        hsb_send_result r = c->results[i];
        if (r.err != HSB_OK && r.msg == NULL) {
            r.msg = hsb_strerror(r.err);
        }
        err = hsb_enc_send_result(&pk, &r);
    }
    if (err != HSB_OK) {
        hsb_nng_writer_abort(&w);
        gw_reply_error(c, HSB_EINTERNAL, "out of memory encoding the reply");
        return;
    }
    gw_reply_send(c, hsb_nng_writer_end(&w));
}

/* ---- connections ------------------------------------------------------------------------- */

static gw_conn *gw_conn_find(gw *g, uint32_t pipe, bool create)
{
    gw_conn **slot = &g->conns[pipe % GW_CONN_BUCKETS];
    for (gw_conn *k = *slot; k != NULL; k = k->hnext) {
        if (k->pipe == pipe) {
            return k;
        }
    }
    if (!create) {
        return NULL;
    }
    gw_conn *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        return NULL;
    }
    k->pipe = pipe;
    k->hnext = *slot;
    *slot = k;
    g->stats.connections++;
    g->stats.open_connections++;
    return k;
}

static void gw_conn_remove(gw *g, gw_conn *k)
{
    gw_conn **pp = &g->conns[k->pipe % GW_CONN_BUCKETS];
    while (*pp != k) {
        pp = &(*pp)->hnext;
    }
    *pp = k->hnext;
    g->stats.open_connections--;
    free(k);
}

static void gw_park(gw *g, gw_conn *k, gw_ctx *c)
{
    c->conn = k;
    c->pprev = NULL;
    c->pnext = k->parked;
    if (k->parked != NULL) {
        k->parked->pprev = c;
    }
    k->parked = c;
    g->n_parked++;
    g->n_parked_nng += c->sc == NULL;
    g->stats.parked = g->n_parked;
    gw_grow(g);
}

static void gw_unpark(gw *g, gw_ctx *c)
{
    gw_conn *k = c->conn;
    if (k == NULL) {
        return;
    }
    if (c->pprev != NULL) {
        c->pprev->pnext = c->pnext;
    } else {
        k->parked = c->pnext;
    }
    if (c->pnext != NULL) {
        c->pnext->pprev = c->pprev;
    }
    c->conn = NULL;
    c->pprev = c->pnext = NULL;
    g->n_parked--;
    g->n_parked_nng -= c->sc == NULL;
    g->stats.parked = g->n_parked;
}

/*
 * gw_conn_release detaches the conn's client and frees its parked fetches with an answer that
 * goes nowhere when the pipe is gone (the REP context needs a send to receive again). A send that
 * waits for durable commits stays with its context: the bus still holds the context as the send's
 * cookie and writes the results into its array when the commits land, so the context may not be
 * reused before gw_send_done; its answer then goes to a closed connection and is dropped (after a
 * bye, to the still open one).
 */
static void gw_conn_release(gw *g, gw_conn *k, hsb_err why, const char *msg)
{
    while (k->parked != NULL) {
        gw_ctx *c = k->parked;
        gw_unpark(g, c);
        if (c->req.op != HSB_OP_FETCH) {
            continue; /* a durable send: answered by gw_send_done */
        }
        if (k->client != NULL) {
            bus_fetch_cancel(g->b, k->client, c);
        }
        gw_reply_error(c, why, msg);
    }
    if (k->client != NULL) {
        log_info("agent_detached", "agent=%s session=%" PRIu64 " pipe=%" PRIu32,
                 bus_client_agent(k->client), bus_client_session(k->client), k->pipe);
        bus_detach(g->b, k->client);
        k->client = NULL;
    }
}

/* ---- requests ---------------------------------------------------------------------------- */

static bool gw_token_ok(gw *g, const hsb_hello *h)
{
    const char *want = g->token_fn != NULL ? g->token_fn(g->token_arg, h->agent) : NULL;
    if (want == NULL || want[0] == '\0') {
        return true;
    }
    /* Constant time: compare fixed-size digests, so neither length nor content leaks. */
    unsigned char a[crypto_generichash_BYTES], b[crypto_generichash_BYTES];
    crypto_generichash(a, sizeof(a), (const unsigned char *)want, strlen(want), NULL, 0);
    crypto_generichash(b, sizeof(b), (const unsigned char *)h->token, strlen(h->token), NULL, 0);
    return sodium_memcmp(a, b, sizeof(a)) == 0;
}

static bool gw_pipe_alive(const gw_ctx *c)
{
    if (c->sc != NULL) {
        return sp_conn_alive(c->sc);
    }
    nng_sockaddr sa;
    return nng_pipe_get_addr(c->pipe, NNG_OPT_REMADDR, &sa) == 0;
}

static void gw_do_hello(gw *g, gw_ctx *c, gw_conn *k)
{
    const hsb_hello *h = &c->req.u.hello;
    if (k->client != NULL) {
        gw_reply_error(c, HSB_EDENIED, "hello: this connection has already said hello");
        return;
    }
    if (!gw_token_ok(g, h)) {
        log_warn("hello_refused", "agent=%s pipe=%" PRIu32 " reason=bad_token", h->agent, k->pipe);
        gw_reply_error(c, HSB_EAUTH, "hello: bad token for this agent");
        return;
    }
    if (!gw_pipe_alive(c)) { /* the close event may already have been handled */
        gw_reply_error(c, HSB_ECLOSED, "hello: connection closed");
        return;
    }
    bus_client *bc;
    hsb_err err = bus_attach(g->b, h, BUS_CLIENT_EXTERNAL, 0, k, &bc);
    if (err != HSB_OK) {
        gw_reply_error(c, err, "hello: the broker refused this agent");
        return;
    }
    k->client = bc;
    log_info("agent_attached",
             "agent=%s session=%" PRIu64 " pipe=%" PRIu32 " handles=%zu subscribes=%zu", h->agent,
             bus_client_session(bc), k->pipe, h->n_handles, h->n_subscribes);

    hsb_reply rep;
    memset(&rep, 0, sizeof(rep));
    rep.op = HSB_OP_HELLO;
    rep.ok = true;
    snprintf(rep.u.hello.session, sizeof(rep.u.hello.session), "%" PRIu64, bus_client_session(bc));
    rep.u.hello.max_body = g->max_body;
    rep.u.hello.max_batch = (uint32_t)c->dec.max_batch;
    gw_reply(c, &rep, 96);
}

static void gw_do_send(gw *g, gw_ctx *c, gw_conn *k)
{
    const hsb_send_req *s = &c->req.u.send;
    if (s->n_msgs > c->results_cap) {
        hsb_send_result *r = realloc(c->results, s->n_msgs * sizeof(*r));
        if (r == NULL) {
            gw_reply_error(c, HSB_EINTERNAL, "send: out of memory");
            return;
        }
        c->results = r;
        c->results_cap = s->n_msgs;
    }
    c->n_results = s->n_msgs;
    bool pending = false;
    hsb_err err = bus_send(g->b, k->client, s->msgs, s->n_msgs, c->results, c, &pending);
    if (err != HSB_OK) {
        gw_reply_error(c, err, "send: refused");
        return;
    }
    if (pending) {
        gw_park(g, k, c); /* answered by gw_send_done after the durable commits */
        return;
    }
    gw_reply_send_results(c);
}

static void gw_do_fetch(gw *g, gw_ctx *c, gw_conn *k)
{
    hsb_err err = bus_fetch(g->b, k->client, &c->req.u.fetch, c);
    if (err != HSB_OK) {
        gw_reply_error(c, err, "fetch: refused");
        return;
    }
    gw_park(g, k, c); /* answered by gw_deliver */
}

static void gw_do_request(gw *g, gw_ctx *c)
{
    g->stats.requests++;
    if (c->derr != HSB_OK) {
        g->stats.bad_requests++;
        log_info("bad_request", "pipe=%" PRIu32 " err=%s reason=\"%s\"", c->pipe_id,
                 hsb_err_name(c->derr), hsb_dec_errmsg(&c->dec));
        gw_reply_error(c, c->derr, hsb_dec_errmsg(&c->dec));
        return;
    }
    gw_conn *k = gw_conn_find(g, c->pipe_id, c->req.op == HSB_OP_HELLO);
    if (c->req.op == HSB_OP_HELLO) {
        if (k == NULL) {
            gw_reply_error(c, HSB_EINTERNAL, "hello: out of memory");
            return;
        }
        gw_do_hello(g, c, k);
        return;
    }
    if (k == NULL || k->client == NULL) {
        gw_reply_error(c, HSB_EAUTH, "say hello first on this connection");
        return;
    }
    switch (c->req.op) {
    case HSB_OP_SEND:
        gw_do_send(g, c, k);
        break;
    case HSB_OP_FETCH:
        gw_do_fetch(g, c, k);
        break;
    case HSB_OP_BYE:
        gw_conn_release(g, k, HSB_ESHUTDOWN, "bye: the agent left");
        gw_reply_simple_ok(c, HSB_OP_BYE);
        break;
    default:
        gw_reply_error(c, HSB_EBADOP, "unknown op");
        break;
    }
}

/* gw_conn_gone detaches the agent of a connection that went away. */
static void gw_conn_gone(gw *g, uint32_t pipe)
{
    gw_conn *k = gw_conn_find(g, pipe, false);
    if (k != NULL) {
        gw_conn_release(g, k, HSB_ECLOSED, "connection closed");
        gw_conn_remove(g, k);
    }
}

/* gw_dispatch handles a decoded request on the loop thread (both transports). */
static void gw_dispatch(gw *g, gw_ctx *c)
{
    if (g->closed) {
        gw_reply_error(c, HSB_ESHUTDOWN, "the daemon is shutting down");
        return;
    }
    gw_do_request(g, c);
}

void gw_handle(gw *g, inbox_item *item)
{
    if (item->kind == GW_ITEM_PIPE_CLOSED) {
        gw_pipe_event *e = (gw_pipe_event *)item;
        gw_conn_gone(g, e->pipe);
        free(e);
        return;
    }
    gw_ctx *c = (gw_ctx *)item;
    if (g->stopped) {
        return; /* stays idle in LOOP state until gw_free */
    }
    gw_dispatch(g, c);
}

/* ---- the ipc listener (sp_ipc callbacks, loop thread) ------------------------------------ */

static bool gw_sp_request(void *arg, sp_conn *sc, const uint8_t *bt, size_t bt_len,
                          const uint8_t *body, size_t len)
{
    gw *g = arg;
    gw_ctx *c = g->sp_free;
    if (c != NULL) {
        g->sp_free = c->free_next;
    } else {
        /* Parked fetches hold contexts; past max_contexts the connection waits (stops reading)
         * until a context is free, as an nng REP socket would. */
        if (g->n_sp_ctx >= g->max_contexts || (c = gw_ctx_new(g)) == NULL) {
            return false;
        }
        gw_ctx_link(g, c);
        g->n_sp_ctx++;
        g->stats.contexts = g->n_ctx + g->n_sp_ctx;
    }
    sp_conn_ref(sc);
    c->sc = sc;
    c->pipe_id = sp_conn_id(sc);
    memcpy(c->bt, bt, bt_len);
    c->bt_len = (uint8_t)bt_len;
    hsb_dec_reset(&c->dec);
    c->derr = hsb_dec_request(&c->dec, body, len, &c->req);
    gw_dispatch(g, c);
    return true;
}

static void gw_sp_closed(void *arg, sp_conn *sc)
{
    gw_conn_gone(arg, sp_conn_id(sc));
}

/* ---- bus callbacks ----------------------------------------------------------------------- */

void gw_deliver(gw *g, bus_client *bc, void *cookie, const bus_delivery *d, size_t n)
{
    gw_ctx *c = cookie;
    (void)bc;
    gw_unpark(g, c);

    /* Reserve the reply's size once: nng 1.5 zeroes and copies the whole buffer on every growth
     * (with a too-small guess that was 18% of the daemon's instructions in oneway-batch). */
    size_t reserve = 16;
    for (size_t i = 0; i < n; i++) {
        reserve += hsb_enc_envelope_bound(&d[i].msg->env) + 10; /* + deliveries */
    }
    hsb_nng_writer w;
    msgpack_packer pk;
    hsb_err err = hsb_nng_writer_begin(&w, &pk, reserve) == 0 ? hsb_enc_fetch_reply_begin(&pk, n)
                                                              : HSB_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        if (err == HSB_OK) {
            hsb_envelope env = d[i].msg->env;
            env.deliveries = d[i].deliveries;
            err = hsb_enc_envelope(&pk, &env);
        }
        bus_msg_unref(d[i].msg);
    }
    if (err != HSB_OK) {
        /* The messages stay in flight and are redelivered after the ack timeout. */
        hsb_nng_writer_abort(&w);
        gw_reply_error(c, HSB_EINTERNAL, "fetch: out of memory encoding the reply");
        return;
    }
    gw_reply_send(c, hsb_nng_writer_end(&w));
}

void gw_send_done(gw *g, void *cookie)
{
    gw_ctx *c = cookie;
    gw_unpark(g, c);
    gw_reply_send_results(c);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

static hsb_err gw_listen(gw *g, const char *url)
{
    int rv = nng_listen(g->sock, url, NULL, 0);
    if (rv != 0) {
        log_error("listen_failed", "url=%s err=\"%s\"", url, nng_strerror(rv));
        return HSB_EIO;
    }
    log_info("listening", "url=%s", url);
    return HSB_OK;
}

hsb_err gw_new(const config *cfg, bus *b, inbox *ib, gw **out)
{
    gw *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return HSB_ENOMEM;
    }
    g->ib = ib;
    g->b = b;
    g->want_ready = cfg->contexts;
    g->max_contexts = cfg->max_contexts;
    g->max_body = cfg->max_body;
    int rv = nng_rep0_open(&g->sock);
    if (rv != 0) {
        log_error("socket_failed", "err=\"%s\"", nng_strerror(rv));
        free(g);
        return HSB_EIO;
    }
    nng_socket_set_size(g->sock, NNG_OPT_RECVMAXSZ, cfg->max_request);
    nng_pipe_notify(g->sock, NNG_PIPE_EV_REM_POST, gw_pipe_cb, g);
    for (uint32_t i = 0; i < cfg->contexts; i++) {
        if (gw_ctx_open(g) != HSB_OK) {
            gw_free(g, false);
            return HSB_ENOMEM;
        }
    }
    *out = g;
    return HSB_OK;
}

static hsb_err gw_listen_ipc(gw *g, const config *cfg)
{
    static const sp_handlers h = {.request = gw_sp_request, .closed = gw_sp_closed};
    const char *path = cfg->listen + strlen("ipc://");
    if (sp_server_listen(g->ib->async.loop, path, cfg->max_request, &h, g, &g->sp) != HSB_OK) {
        return HSB_EIO;
    }
    log_info("listening", "url=%s", cfg->listen);
    return HSB_OK;
}

hsb_err gw_start(gw *g, const config *cfg)
{
    bool ipc = strncmp(cfg->listen, "ipc://", 6) == 0;
    if ((ipc ? gw_listen_ipc(g, cfg) : gw_listen(g, cfg->listen)) != HSB_OK ||
        (cfg->listen_tcp[0] != '\0' && gw_listen(g, cfg->listen_tcp) != HSB_OK)) {
        return HSB_EIO;
    }
    return HSB_OK;
}

void gw_set_bus(gw *g, bus *b)
{
    g->b = b;
}

void gw_set_token_check(gw *g, gw_token_fn fn, void *arg)
{
    g->token_fn = fn;
    g->token_arg = arg;
}

void gw_stats_get(const gw *g, gw_stats *st)
{
    *st = g->stats;
}

void gw_close(gw *g)
{
    /* Answer parked fetches now (empty), so agents see the drain instead of a timeout. */
    for (size_t i = 0; i < GW_CONN_BUCKETS; i++) {
        for (gw_conn *k = g->conns[i]; k != NULL; k = k->hnext) {
            gw_ctx *c = k->parked;
            while (c != NULL) {
                gw_ctx *next = c->pnext;
                if (c->req.op == HSB_OP_FETCH) {
                    if (k->client != NULL) {
                        bus_fetch_cancel(g->b, k->client, c);
                    }
                    gw_deliver(g, k->client, c, NULL, 0); /* unparks and answers */
                }
                c = next;
            }
        }
    }
    g->closed = true;
}

void gw_stop(gw *g)
{
    g->closed = true;
    g->stopped = true;
    sp_server_close(g->sp); /* its connections' closed handlers detach their clients now */
    nng_close(g->sock);     /* pending aios complete with NNG_ECLOSED */
    for (gw_ctx *c = g->all; c != NULL; c = c->all_next) {
        if (c->aio != NULL) {
            nng_aio_stop(c->aio); /* waits for a running callback */
        }
    }
}

void gw_free(gw *g, bool detach_clients)
{
    if (g == NULL) {
        return;
    }
    if (!g->stopped) {
        gw_stop(g);
    }
    for (size_t i = 0; i < GW_CONN_BUCKETS; i++) {
        gw_conn *k = g->conns[i];
        while (k != NULL) {
            gw_conn *next = k->hnext;
            if (detach_clients && k->client != NULL && g->b != NULL) {
                bus_detach(g->b, k->client);
            }
            free(k);
            k = next;
        }
        g->conns[i] = NULL;
    }
    gw_ctx *c = g->all;
    while (c != NULL) {
        gw_ctx *next = c->all_next;
        if (c->sc != NULL) {
            sp_conn_unref(c->sc); /* a request on a connection that is gone */
        }
        gw_ctx_free(c);
        c = next;
    }
    sp_server_free(g->sp);
    free(g);
}
