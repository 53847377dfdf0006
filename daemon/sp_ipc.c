/*
 * daemon/sp_ipc.c - nng's REQ/REP wire protocol, REP side, on a libuv Unix socket (sp_*).
 *
 * A connection reads into one buffer and handles every complete message in it before reading
 * again, so a batch of requests that arrived together costs one read. The buffer is freed whenever
 * it is empty, so an idle connection costs its handle and nothing more. Replies are written with
 * uv_try_write, which writes straight from the caller's buffers when nothing is queued; only the
 * rest of a reply the socket did not take is copied.
 */
#include "daemon/sp_ipc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/log.h"

#define SP_PROTO_REQ   0x30
#define SP_PROTO_REP   0x31
#define SP_HEAD_LEN    9       /* type byte + u64 length */
#define SP_READ_MIN    65536   /* room offered to each read */
#define SP_QUEUE_LIMIT 4194304 /* unsent reply bytes at which a connection stops reading */

enum {
    SP_HOLD_REFUSED = 1, /* the handler refused a request: wait for sp_server_kick */
    SP_HOLD_WRITES = 2,  /* too many unsent replies: wait for the writes to drain */
};

struct sp_conn {
    uv_pipe_t pipe; /* first: the handle's pointer is the connection's */
    sp_server *srv;
    sp_conn *prev, *next; /* the server's list */
    uint32_t id;
    uint32_t refs; /* the open handle holds one */
    int hold;      /* SP_HOLD_* bits: not reading while non-zero */
    bool reading;
    bool negotiated;
    bool closing;
    uint8_t *buf;
    size_t len, cap;
    size_t want; /* bytes the message at the buffer's start needs, 0 when unknown */
};

struct sp_server {
    uv_loop_t *loop;
    uv_pipe_t listener;
    uv_idle_t kick;
    sp_handlers h;
    void *arg;
    size_t max_msg;
    sp_conn *conns;
    uint32_t next_id;
    uint32_t n_refused;
    bool listening;
    bool closed;
    int handles; /* open handles of the server itself (listener, kick) */
    char path[108];
};

typedef struct sp_write {
    uv_write_t req;
    sp_conn *c;
    uint8_t data[];
} sp_write;

static const uint8_t sp_hello[8] = {0, 'S', 'P', 0, 0, SP_PROTO_REP, 0, 0};

static void sp_conn_close(sp_conn *c);
static void sp_conn_process(sp_conn *c);

/* ---- reading ------------------------------------------------------------------------------ */

static void sp_alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    sp_conn *c = (sp_conn *)h;
    size_t need = c->len + SP_READ_MIN;
    (void)suggested;
    if (c->want > c->len && c->want - c->len > SP_READ_MIN) {
        need = c->want; /* one read can finish a large message */
    }
    if (need > c->cap) {
        uint8_t *b = realloc(c->buf, need);
        if (b == NULL) {
            *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS: the connection closes */
            return;
        }
        c->buf = b;
        c->cap = need;
    }
    *out = uv_buf_init((char *)c->buf + c->len, (unsigned)(c->cap - c->len));
}

static void sp_read_cb(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sp_conn *c = (sp_conn *)st;
    (void)b;
    if (n < 0) {
        if (n != UV_EOF) {
            log_info("agent_conn_error", "pipe=%" PRIu32 " err=%s", c->id, uv_err_name((int)n));
        }
        sp_conn_close(c);
        return;
    }
    c->len += (size_t)n;
    sp_conn_process(c);
}

static void sp_conn_set_reading(sp_conn *c)
{
    bool want = c->hold == 0 && !c->closing;
    if (want == c->reading) {
        return;
    }
    if (want) {
        if (uv_read_start((uv_stream_t *)&c->pipe, sp_alloc_cb, sp_read_cb) != 0) {
            sp_conn_close(c);
            return;
        }
    } else {
        uv_read_stop((uv_stream_t *)&c->pipe);
    }
    c->reading = want;
}

static uint64_t sp_get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* sp_backtrace returns the backtrace's length in msg (len bytes), or 0 when it is malformed. */
static size_t sp_backtrace(const uint8_t *msg, size_t len)
{
    for (size_t off = 0; off + 4 <= len && off < SP_BACKTRACE_MAX; off += 4) {
        if (msg[off] & 0x80) {
            return off + 4;
        }
    }
    return 0;
}

/* sp_conn_process handles every complete message in the buffer, unless held or closed. */
static void sp_conn_process(sp_conn *c)
{
    sp_server *s = c->srv;
    size_t off = 0;

    sp_conn_ref(c); /* a handler may close the connection */
    if (!c->negotiated) {
        if (c->len < sizeof(sp_hello)) {
            goto out;
        }
        const uint8_t *p = c->buf;
        if (p[0] != 0 || p[1] != 'S' || p[2] != 'P' || p[3] != 0 || p[6] != 0 || p[7] != 0 ||
            (p[4] << 8 | p[5]) != SP_PROTO_REQ) {
            log_info("agent_conn_refused", "pipe=%" PRIu32 " reason=\"not an nng REQ peer\"",
                     c->id);
            sp_conn_close(c);
            goto out;
        }
        c->negotiated = true;
        off = sizeof(sp_hello);
    }
    c->want = 0;
    while (c->hold == 0 && !c->closing && c->len - off >= SP_HEAD_LEN) {
        const uint8_t *p = c->buf + off;
        uint64_t mlen = sp_get64(p + 1);
        if (p[0] != 1 || mlen > s->max_msg) {
            log_warn("agent_conn_refused", "pipe=%" PRIu32 " reason=\"%s\" bytes=%" PRIu64, c->id,
                     p[0] != 1 ? "bad message type" : "message over gateway.max_request", mlen);
            sp_conn_close(c);
            break;
        }
        if (c->len - off - SP_HEAD_LEN < mlen) {
            c->want = SP_HEAD_LEN + (size_t)mlen;
            break;
        }
        const uint8_t *m = p + SP_HEAD_LEN;
        size_t bt = sp_backtrace(m, (size_t)mlen);
        if (bt != 0 && !s->h.request(s->arg, c, m, bt, m + bt, (size_t)mlen - bt)) {
            c->hold |= SP_HOLD_REFUSED;
            s->n_refused++;
            break;
        }
        off += SP_HEAD_LEN + (size_t)mlen;
    }
    if (off > 0 && !c->closing) {
        memmove(c->buf, c->buf + off, c->len - off);
        c->len -= off;
        if (c->len == 0) { /* an idle connection holds no buffer; malloc reuses it cheaply */
            free(c->buf);
            c->buf = NULL;
            c->cap = 0;
        }
    }
    if (!c->closing) {
        sp_conn_set_reading(c);
    }
out:
    sp_conn_unref(c);
}

/* ---- writing ------------------------------------------------------------------------------ */

static void sp_write_cb(uv_write_t *req, int status)
{
    sp_write *w = (sp_write *)req;
    sp_conn *c = w->c;
    free(w);
    if (status < 0) {
        if (status != UV_ECANCELED) {
            log_info("agent_conn_error", "pipe=%" PRIu32 " err=%s", c->id, uv_err_name(status));
        }
        sp_conn_close(c);
    } else if (!c->closing && (c->hold & SP_HOLD_WRITES) &&
               uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) < SP_QUEUE_LIMIT / 2) {
        c->hold &= ~SP_HOLD_WRITES;
        sp_conn_process(c); /* what arrived before the hold, then read again */
    }
    sp_conn_unref(c);
}

void sp_conn_reply(sp_conn *c, const uint8_t *bt, size_t bt_len, const void *body, size_t len)
{
    if (c->closing) {
        return;
    }
    uint8_t head[SP_HEAD_LEN];
    uint64_t mlen = bt_len + len;
    head[0] = 1;
    for (int i = 0; i < 8; i++) {
        head[1 + i] = (uint8_t)(mlen >> (56 - 8 * i));
    }
    uv_buf_t bufs[3] = {uv_buf_init((char *)head, sizeof(head)),
                        uv_buf_init((char *)bt, (unsigned)bt_len),
                        uv_buf_init((char *)body, (unsigned)len)};
    size_t total = sizeof(head) + bt_len + len, done = 0;
    int rv = uv_try_write((uv_stream_t *)&c->pipe, bufs, 3);
    if (rv >= 0) {
        done = (size_t)rv;
    } else if (rv != UV_EAGAIN) {
        log_info("agent_conn_error", "pipe=%" PRIu32 " err=%s", c->id, uv_err_name(rv));
        sp_conn_close(c);
        return;
    }
    if (done == total) {
        return;
    }
    /* Queue the rest, in order after anything already queued (uv_try_write refuses to write
     * while a write is queued, so nothing can overtake). */
    sp_write *w = malloc(sizeof(*w) + total - done);
    if (w == NULL) {
        log_error("agent_conn_error", "pipe=%" PRIu32 " err=ENOMEM", c->id);
        sp_conn_close(c); /* a reply cut short cannot be resumed: the stream is broken */
        return;
    }
    size_t at = 0;
    for (int i = 0; i < 3; i++) {
        size_t skip = done > bufs[i].len ? bufs[i].len : done;
        memcpy(w->data + at, bufs[i].base + skip, bufs[i].len - skip);
        at += bufs[i].len - skip;
        done -= skip;
    }
    w->c = c;
    uv_buf_t rest = uv_buf_init((char *)w->data, (unsigned)at);
    if (uv_write(&w->req, (uv_stream_t *)&c->pipe, &rest, 1, sp_write_cb) != 0) {
        free(w);
        sp_conn_close(c);
        return;
    }
    sp_conn_ref(c);
    if (uv_stream_get_write_queue_size((uv_stream_t *)&c->pipe) >= SP_QUEUE_LIMIT) {
        c->hold |= SP_HOLD_WRITES; /* the peer does not read its replies */
        sp_conn_set_reading(c);
    }
}

/* ---- connections -------------------------------------------------------------------------- */

uint32_t sp_conn_id(const sp_conn *c)
{
    return c->id;
}

bool sp_conn_alive(const sp_conn *c)
{
    return !c->closing;
}

void sp_conn_ref(sp_conn *c)
{
    c->refs++;
}

void sp_conn_unref(sp_conn *c)
{
    if (--c->refs == 0) {
        free(c->buf);
        free(c);
    }
}

static void sp_conn_close_cb(uv_handle_t *h)
{
    sp_conn_unref((sp_conn *)h);
}

static void sp_conn_close(sp_conn *c)
{
    if (c->closing) {
        return;
    }
    sp_server *s = c->srv;
    c->closing = true;
    if (c->hold & SP_HOLD_REFUSED) {
        s->n_refused--;
    }
    if (c->prev != NULL) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next != NULL) {
        c->next->prev = c->prev;
    }
    if (c->negotiated) {
        s->h.closed(s->arg, c);
    }
    uv_close((uv_handle_t *)&c->pipe, sp_conn_close_cb);
}

static void sp_accept_cb(uv_stream_t *l, int status)
{
    sp_server *s = l->data;
    if (status < 0) {
        log_warn("accept_failed", "err=%s", uv_err_name(status));
        return;
    }
    sp_conn *c = calloc(1, sizeof(*c));
    if (c == NULL || uv_pipe_init(s->loop, &c->pipe, 0) != 0) {
        log_error("accept_failed", "err=ENOMEM");
        free(c);
        return;
    }
    c->srv = s;
    c->refs = 1;
    c->id = 0x80000000u | (++s->next_id & 0x7fffffffu);
    if (uv_accept(l, (uv_stream_t *)&c->pipe) != 0) {
        uv_close((uv_handle_t *)&c->pipe, sp_conn_close_cb);
        return;
    }
    c->next = s->conns;
    if (s->conns != NULL) {
        s->conns->prev = c;
    }
    s->conns = c;
    /* Our half of the handshake: 8 bytes always fit an empty socket buffer. */
    uv_buf_t hb = uv_buf_init((char *)sp_hello, sizeof(sp_hello));
    if (uv_try_write((uv_stream_t *)&c->pipe, &hb, 1) != (int)sizeof(sp_hello)) {
        sp_conn_close(c);
        return;
    }
    sp_conn_set_reading(c);
}

/* ---- the server --------------------------------------------------------------------------- */

static void sp_kick_cb(uv_idle_t *h)
{
    sp_server *s = h->data;
    uv_idle_stop(h);
    for (sp_conn *c = s->conns, *next; c != NULL && s->n_refused > 0; c = next) {
        next = c->next;
        if (c->hold & SP_HOLD_REFUSED) {
            c->hold &= ~SP_HOLD_REFUSED;
            s->n_refused--;
            sp_conn_process(c); /* may refuse again */
        }
    }
}

void sp_server_kick(sp_server *s)
{
    if (s != NULL && s->n_refused > 0 && !s->closed) {
        uv_idle_start(&s->kick, sp_kick_cb);
    }
}

/* sp_stale removes a socket file that nobody accepts on (left by a daemon that died). */
static void sp_stale(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno == ECONNREFUSED) {
        unlink(path);
    }
    close(fd);
}

static void sp_server_close_cb(uv_handle_t *h)
{
    sp_server *s = h->data;
    s->handles--;
}

hsb_err sp_server_listen(uv_loop_t *loop, const char *path, size_t max_msg, const sp_handlers *h,
                         void *arg, sp_server **out)
{
    sp_server *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return HSB_ENOMEM;
    }
    if (strlen(path) >= sizeof(s->path) || path[0] == '\0') {
        log_error("listen_failed", "url=ipc://%s err=\"path too long or empty\"", path);
        free(s);
        return HSB_EIO;
    }
    snprintf(s->path, sizeof(s->path), "%s", path);
    s->loop = loop;
    s->h = *h;
    s->arg = arg;
    s->max_msg = max_msg;
    uv_pipe_init(loop, &s->listener, 0);
    uv_idle_init(loop, &s->kick);
    s->listener.data = s;
    s->kick.data = s;
    s->handles = 2;
    sp_stale(path);
    int rv = uv_pipe_bind(&s->listener, path);
    if (rv == 0) {
        rv = uv_listen((uv_stream_t *)&s->listener, 128, sp_accept_cb);
        if (rv != 0) {
            unlink(path);
        }
    }
    if (rv != 0) {
        log_error("listen_failed", "url=ipc://%s err=\"%s\"", path, uv_strerror(rv));
        s->closed = true;
        uv_close((uv_handle_t *)&s->listener, sp_server_close_cb);
        uv_close((uv_handle_t *)&s->kick, sp_server_close_cb);
        *out = s; /* freed by sp_server_free after the loop ran the close callbacks */
        return HSB_EIO;
    }
    s->listening = true;
    *out = s;
    return HSB_OK;
}

void sp_server_close(sp_server *s)
{
    if (s == NULL || s->closed) {
        return;
    }
    s->closed = true;
    if (s->listening) {
        unlink(s->path);
    }
    uv_close((uv_handle_t *)&s->listener, sp_server_close_cb);
    uv_close((uv_handle_t *)&s->kick, sp_server_close_cb);
    while (s->conns != NULL) {
        sp_conn_close(s->conns);
    }
}

void sp_server_free(sp_server *s)
{
    if (s == NULL) {
        return;
    }
    sp_server_close(s);
    if (s->handles != 0) {
        log_error("sp_server_leak", "handles=%d reason=\"freed before the loop closed them\"",
                  s->handles);
        return; /* leak rather than let libuv touch freed memory */
    }
    free(s);
}
