/*
 * daemon/control.c - the control socket (see control.h for the model).
 *
 * Each context cycles RECV -> (decode, check, dispatch) -> run -> SEND -> RECV. While a request is
 * being run the context is owned by whoever runs it: the loop (through the inbox), the worker
 * thread, or a store completion (deferred calls). Exactly one of them calls control_call_finish,
 * which sends the reply; the send's completion re-arms the receive. Nothing is called back or sent
 * while control's lock is held: the lock only guards the worker queue.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "daemon/control.h"
#include "daemon/log.h"
#include "daemon/server.h"
#include "proto/codec.h"

#define CONTROL_RECVMAX (64u * 1024u) /* a control request is a command and a few arguments */

typedef enum control_state {
    CONTROL_RECV = 0,
    CONTROL_SEND,
} control_state;

typedef struct control_ctx {
    inbox_item item; /* kind CONTROL_ITEM_CALL while posted to the loop */
    control *c;
    nng_ctx ctx;
    nng_aio *aio;
    control_state state;
    hsb_dec dec; /* owns req's strings; used by this context only */
    hsb_ctl_request req;
    cmdtab_call call;
    cmdtab_fn next;      /* set by control_call_continue: the stage the loop runs next */
    msgpack_sbuffer buf; /* the reply being built */
    msgpack_packer pk;
    uint64_t peer_pid;
    atomic_uint holds;         /* see control_release */
    struct control_ctx *qnext; /* worker queue */
} control_ctx;

struct control {
    srv *s;
    struct alerts *al;
    nng_socket sock;
    bool sock_open;
    control_ctx *ctxs;
    unsigned n_ctxs;
    pthread_t worker;
    bool worker_started;
    pthread_mutex_t lock; /* guards qhead/qtail only */
    pthread_cond_t cv;
    control_ctx *qhead, *qtail;
    atomic_bool stopping;
    bool stopped;
    uint64_t uid;
    atomic_ulong requests;
    atomic_ulong denied;
    char url[CONFIG_PATH_MAX];
};

static void control_recv(control_ctx *cc)
{
    if (atomic_load(&cc->c->stopping)) {
        return;
    }
    cc->state = CONTROL_RECV;
    nng_ctx_recv(cc->ctx, cc->aio);
}

static void control_send(control_ctx *cc)
{
    nng_msg *m = NULL;

    if (nng_msg_alloc(&m, 0) != 0 || nng_msg_append(m, cc->buf.data, cc->buf.size) != 0) {
        /* Out of memory: drop the request; the client times out. */
        nng_msg_free(m);
        log_error("control_reply_failed", "err=HSB_ENOMEM");
        control_recv(cc);
        return;
    }
    cc->state = CONTROL_SEND;
    nng_aio_set_msg(cc->aio, m);
    nng_ctx_send(cc->ctx, cc->aio);
}

/* control_reply_err answers at once with an error (decode failures, denials, usage errors). */
static void control_reply_err(control_ctx *cc, hsb_err err, const char *msg)
{
    msgpack_sbuffer_clear(&cc->buf);
    hsb_enc_ctl_reply_err(&cc->pk, err, msg);
    control_send(cc);
}

/*
 * Holds. A call is answered when its last hold is released: the stage running holds one, each
 * control_call_defer or control_call_continue adds one (released by control_call_finish, or by
 * the continued stage). Whether the stage that just returned handed the call off is recorded in a
 * thread-local flag, since only the handler's own thread may defer or continue while it runs.
 */
static _Thread_local bool control_handed_off;

static void control_release(control_ctx *cc)
{
    if (atomic_fetch_sub(&cc->holds, 1) == 1) {
        control_send(cc);
    }
}

/* control_log_safe copies s for a quoted log value: quotes, backslashes and control characters
 * (which an operator's argument may carry into an error text) become '?', so one event stays one
 * well-formed line. */
static void control_log_safe(const char *s, char *out, size_t len)
{
    size_t i;

    for (i = 0; s[i] != '\0' && i + 1 < len; i++) {
        unsigned char ch = (unsigned char)s[i];
        out[i] = (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\') ? '?' : (char)ch;
    }
    out[i] = '\0';
}

/* control_set_result turns the reply into an error reply when err is not HSB_OK. */
static void control_set_result(control_ctx *cc, hsb_err err)
{
    cmdtab_call *call = &cc->call;
    const cmdtab_entry *e = call->entry;
    char safe[sizeof(call->msg)];

    if (err == HSB_OK) {
        return;
    }
    if (call->msg[0] == '\0') {
        snprintf(call->msg, sizeof(call->msg), "%s", hsb_strerror(err));
    }
    control_log_safe(call->msg, safe, sizeof(safe));
    log_info("control_command_failed", "cmd=%s sub=%s err=%s msg=\"%s\"", e->name,
             e->sub != NULL ? e->sub : "-", hsb_err_name(err), safe);
    msgpack_sbuffer_clear(&cc->buf);
    hsb_enc_ctl_reply_err(&cc->pk, err, call->msg);
}

void control_call_defer(cmdtab_call *call)
{
    control_ctx *cc = call->ctx;

    control_handed_off = true;
    atomic_fetch_add(&cc->holds, 1);
}

void control_call_finish(cmdtab_call *call, hsb_err err)
{
    control_ctx *cc = call->ctx;

    control_set_result(cc, err);
    control_release(cc);
}

/* control_run runs one stage of a call with the hold it was given, then releases that hold. */
static void control_run(control_ctx *cc, cmdtab_fn fn)
{
    hsb_err err;

    control_handed_off = false;
    err = fn(&cc->call);
    if (!control_handed_off) {
        control_set_result(cc, err);
    }
    control_handed_off = false;
    control_release(cc);
}

void control_call_continue(cmdtab_call *call, cmdtab_fn fn)
{
    control_ctx *cc = call->ctx;

    control_handed_off = true;
    atomic_fetch_add(&cc->holds, 1);
    cc->next = fn;
    cc->item.kind = CONTROL_ITEM_CALL;
    inbox_post(&cc->c->s->ib, &cc->item);
}

static void control_queue_worker(control *c, control_ctx *cc)
{
    pthread_mutex_lock(&c->lock);
    cc->qnext = NULL;
    if (c->qtail != NULL) {
        c->qtail->qnext = cc;
    } else {
        c->qhead = cc;
    }
    c->qtail = cc;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->lock);
}

static void *control_worker_main(void *arg)
{
    control *c = arg;

    pthread_setname_np(pthread_self(), "hsb-control");
    pthread_mutex_lock(&c->lock);
    for (;;) {
        while (!atomic_load(&c->stopping) && c->qhead == NULL) {
            pthread_cond_wait(&c->cv, &c->lock);
        }
        if (atomic_load(&c->stopping)) {
            break;
        }
        control_ctx *cc = c->qhead;
        c->qhead = cc->qnext;
        if (c->qhead == NULL) {
            c->qtail = NULL;
        }
        pthread_mutex_unlock(&c->lock);
        control_run(cc, cc->call.entry->fn);
        pthread_mutex_lock(&c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

/*
 * control_peer_ok checks the peer's uid: the daemon's own or root. A pipe whose uid cannot be read
 * (not IPC) is refused.
 */
static bool control_peer_ok(control *c, control_ctx *cc, nng_msg *m, uint64_t *uid)
{
    nng_pipe p = nng_msg_get_pipe(m);

    *uid = UINT64_MAX;
    cc->peer_pid = 0;
    if (nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_UID, uid) != 0) {
        return false;
    }
    (void)nng_pipe_get_uint64(p, NNG_OPT_IPC_PEER_PID, &cc->peer_pid);
    return *uid == 0 || *uid == c->uid;
}

/* control_dispatch runs on the nng thread that completed the receive. */
static void control_dispatch(control_ctx *cc, nng_msg *m)
{
    control *c = cc->c;
    const cmdtab_entry *e;
    char usage[128];
    uint64_t uid;
    size_t rest = 0;
    bool known = false;
    hsb_err err;

    atomic_fetch_add(&c->requests, 1);
    if (!control_peer_ok(c, cc, m, &uid)) {
        nng_msg_free(m);
        atomic_fetch_add(&c->denied, 1);
        if (uid == UINT64_MAX) {
            log_warn("control_denied", "reason=no_peer_credentials");
        } else {
            log_warn("control_denied",
                     "peer_uid=%" PRIu64 " peer_pid=%" PRIu64 " daemon_uid=%" PRIu64, uid,
                     cc->peer_pid, c->uid);
        }
        control_reply_err(cc, HSB_EDENIED,
                          "permission denied: the control socket serves only the daemon's user "
                          "and root");
        return;
    }

    hsb_dec_reset(&cc->dec);
    err = hsb_dec_ctl_request(&cc->dec, nng_msg_body(m), nng_msg_len(m), &cc->req);
    nng_msg_free(m);
    if (err != HSB_OK) {
        char safe[200];
        control_log_safe(hsb_dec_errmsg(&cc->dec), safe, sizeof(safe));
        log_info("control_bad_request", "err=%s msg=\"%s\"", hsb_err_name(err), safe);
        control_reply_err(cc, err, hsb_dec_errmsg(&cc->dec));
        return;
    }

    e = cmdtab_find(cc->req.cmd, cc->req.args, cc->req.n_args, &rest, &known);
    if (e == NULL) {
        char msg[160];
        if (known) {
            snprintf(msg, sizeof(msg),
                     "unknown or missing sub-command for \"%s\" (see hsbusctl help)", cc->req.cmd);
        } else {
            snprintf(msg, sizeof(msg), "unknown command \"%s\" (see hsbusctl help)", cc->req.cmd);
        }
        control_reply_err(cc, HSB_EBADOP, msg);
        return;
    }
    if (cc->req.n_args - rest < e->min_args || cc->req.n_args - rest > e->max_args) {
        char msg[200];
        cmdtab_usage(e, usage, sizeof(usage));
        snprintf(msg, sizeof(msg), "usage: %s", usage);
        control_reply_err(cc, HSB_EINVAL, msg);
        return;
    }

    if (e->flags & CMDTAB_LIVE) {
        log_debug("control_command", "cmd=%s sub=%s peer_pid=%" PRIu64, e->name,
                  e->sub != NULL ? e->sub : "-", cc->peer_pid);
    } else {
        log_info("control_command",
                 "cmd=%s sub=%s nargs=%zu peer_uid=%" PRIu64 " peer_pid=%" PRIu64, e->name,
                 e->sub != NULL ? e->sub : "-", cc->req.n_args - rest, uid, cc->peer_pid);
    }

    msgpack_sbuffer_clear(&cc->buf);
    hsb_enc_ctl_reply_ok_begin(&cc->pk);
    free(cc->call.scratch);
    memset(&cc->call, 0, sizeof(cc->call));
    cc->call.s = c->s;
    cc->call.al = c->al;
    cc->call.entry = e;
    cc->call.args = cc->req.args + rest;
    cc->call.n_args = cc->req.n_args - rest;
    cc->call.pk = &cc->pk;
    cc->call.ctx = cc;
    cc->next = NULL;
    atomic_store(&cc->holds, 1);

    if (e->flags & CMDTAB_WORKER) {
        control_queue_worker(c, cc);
        return;
    }
    cc->item.kind = CONTROL_ITEM_CALL;
    inbox_post(&c->s->ib, &cc->item);
}

static void control_aio_cb(void *arg)
{
    control_ctx *cc = arg;
    int rv = nng_aio_result(cc->aio);

    if (cc->state == CONTROL_SEND) {
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(cc->aio));
        }
        control_recv(cc);
        return;
    }
    if (rv != 0) {
        if (rv != NNG_ECLOSED && rv != NNG_ECANCELED) {
            log_warn("control_recv_failed", "err=\"%s\"", nng_strerror(rv));
            control_recv(cc);
        }
        return;
    }
    control_dispatch(cc, nng_aio_get_msg(cc->aio));
}

void control_handle(control *c, inbox_item *item)
{
    control_ctx *cc = (control_ctx *)(void *)((char *)item - offsetof(control_ctx, item));
    cmdtab_fn fn;

    if (c->stopped || atomic_load(&c->stopping)) {
        return; /* the socket is closed: nobody to answer */
    }
    /* The continued stage runs with the hold control_call_continue took. */
    fn = cc->next != NULL ? cc->next : cc->call.entry->fn;
    cc->next = NULL;
    control_run(cc, fn);
}

hsb_err control_start(srv *s, struct alerts *al, const char *url, unsigned ncontexts, control **out)
{
    control *c;
    nng_listener l;
    hsb_err err = HSB_EIO;
    int rv;

    *out = NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return HSB_ENOMEM;
    }
    c->s = s;
    c->al = al;
    c->uid = (uint64_t)geteuid();
    snprintf(c->url, sizeof(c->url), "%s", url);
    atomic_init(&c->stopping, false);
    atomic_init(&c->requests, 0);
    atomic_init(&c->denied, 0);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cv, NULL);

    c->ctxs = calloc(ncontexts, sizeof(*c->ctxs));
    if (c->ctxs == NULL) {
        err = HSB_ENOMEM;
        goto fail_lock;
    }
    if ((rv = nng_rep0_open(&c->sock)) != 0) {
        log_error("control_failed", "url=%s err=\"%s\"", url, nng_strerror(rv));
        goto fail_ctxs;
    }
    c->sock_open = true;
    nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, CONTROL_RECVMAX);
    for (unsigned i = 0; i < ncontexts; i++) {
        control_ctx *cc = &c->ctxs[i];
        cc->c = c;
        msgpack_sbuffer_init(&cc->buf);
        msgpack_packer_init(&cc->pk, &cc->buf, msgpack_sbuffer_write);
        if (hsb_dec_init(&cc->dec) != HSB_OK) {
            err = HSB_ENOMEM;
            goto fail_sock;
        }
        c->n_ctxs = i + 1;
        if ((rv = nng_aio_alloc(&cc->aio, control_aio_cb, cc)) != 0 ||
            (rv = nng_ctx_open(&cc->ctx, c->sock)) != 0) {
            log_error("control_failed", "url=%s err=\"%s\"", url, nng_strerror(rv));
            err = HSB_ENOMEM;
            goto fail_sock;
        }
    }

    if ((rv = nng_listener_create(&l, c->sock, url)) != 0) {
        log_error("control_failed", "url=%s err=\"%s\"", url, nng_strerror(rv));
        goto fail_sock;
    }
    if (strncmp(url, "ipc://", 6) == 0 &&
        (rv = nng_listener_set_int(l, NNG_OPT_IPC_PERMISSIONS, 0600)) != 0) {
        log_error("control_failed", "url=%s err=\"%s\"", url, nng_strerror(rv));
        goto fail_sock;
    }
    if ((rv = nng_listener_start(l, 0)) != 0) {
        log_error("control_failed", "url=%s err=\"%s\"", url, nng_strerror(rv));
        goto fail_sock;
    }

    if (pthread_create(&c->worker, NULL, control_worker_main, c) != 0) {
        log_error("control_failed", "url=%s err=\"cannot start the worker thread\"", url);
        goto fail_sock;
    }
    c->worker_started = true;
    for (unsigned i = 0; i < c->n_ctxs; i++) {
        control_recv(&c->ctxs[i]);
    }
    log_info("control_listening", "url=%s mode=0600 contexts=%u", url, ncontexts);
    *out = c;
    return HSB_OK;

fail_sock:
    control_stop(c);
    control_free(c);
    return err;

fail_ctxs:
    free(c->ctxs);
fail_lock:
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return err;
}

void control_stop(control *c)
{
    if (c == NULL || c->stopped) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    atomic_store(&c->stopping, true);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->lock);
    if (c->worker_started) {
        pthread_join(c->worker, NULL);
        c->worker_started = false;
    }
    if (c->sock_open) {
        nng_close(c->sock);
        c->sock_open = false;
    }
    for (unsigned i = 0; i < c->n_ctxs; i++) {
        if (c->ctxs[i].aio != NULL) {
            nng_aio_stop(c->ctxs[i].aio);
        }
    }
    c->stopped = true;
}

void control_free(control *c)
{
    if (c == NULL) {
        return;
    }
    for (unsigned i = 0; i < c->n_ctxs; i++) {
        control_ctx *cc = &c->ctxs[i];
        nng_aio_free(cc->aio);
        hsb_dec_fini(&cc->dec);
        msgpack_sbuffer_destroy(&cc->buf);
        free(cc->call.scratch);
    }
    free(c->ctxs);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

unsigned long control_requests(const control *c)
{
    return c != NULL ? atomic_load(&((control *)c)->requests) : 0;
}

unsigned long control_denied(const control *c)
{
    return c != NULL ? atomic_load(&((control *)c)->denied) : 0;
}
