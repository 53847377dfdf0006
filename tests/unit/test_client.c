/*
 * tests/unit/test_client.c - libhsbus against a fake daemon.
 *
 * The fake is a REP socket on ipc:///tmp/... served by a pool of threads, each with its own nng
 * context and hsb_dec, that speaks agent protocol v1 with the proto codec. It has one queue (the
 * test's client is its only agent) and routes by `to`:
 *   "self"    the message itself is queued back to the sender (so the client receives requests);
 *   "echo"    a reply (corr = the message's id, same body) is queued, as an echo agent would;
 *   "early"   like "echo", but the reply is queued 100 ms before the send is answered;
 *   "fail"    a sys.error {err: E_EXPIRED, msg: "expired in queue"} with corr = the id is queued;
 *   "void"    accepted, nothing happens;
 *   anything else: refused with E_NOROUTE.
 * hello with token "bad" is refused with E_AUTH. Fetches long-poll on the queue and record acks and
 * nacks for the tests to check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>

#include "hsbus.h"
#include "proto/codec.h"

#define FAKE_WORKERS 40
#define FAKE_QMAX    4096
#define FAKE_ACKMAX  8192

/* cmocka's assertions must not fail on another thread than the test's: the fake's own checks
 * abort instead. */
#define FAKE_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fake daemon: %s:%d: %s\n", __FILE__, __LINE__, #cond);                \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct fake_env {
    hsb_envelope env;
    uint8_t *body;
} fake_env;

typedef struct fake {
    nng_socket sock;
    char url[128];
    pthread_t workers[FAKE_WORKERS];
    pthread_mutex_t mtx;
    pthread_cond_t cv;
    bool stop;
    uint64_t next_id;
    char agent[HSB_NAME_MAX + 1];
    fake_env queue[FAKE_QMAX];
    size_t q_head, q_len;
    uint64_t acks[FAKE_ACKMAX];
    size_t n_acks;
    uint64_t nacks[FAKE_ACKMAX];
    char last_nack_reason[HSB_REASON_MAX + 1];
    size_t n_nacks;
    size_t n_fetches;
    size_t n_byes;
    int sends_now;    /* send requests being handled right now */
    int sends_peak;   /* the most at once: > 1 proves the client pipelines */
    size_t send_reqs; /* send requests decoded */
    size_t group_max; /* the most messages one send request carried */
    size_t bad_reqs;  /* requests refused as malformed */
    bool hold;        /* messages to "hold" wait in the fake until this is cleared */
    int held;         /* sends waiting on hold now */
} fake;

static fake *fake_g;

static int64_t tc_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fake_push_locked(fake *f, const hsb_envelope *env)
{
    fake_env *e;

    FAKE_CHECK(f->q_len < FAKE_QMAX);
    e = &f->queue[(f->q_head + f->q_len) % FAKE_QMAX];
    e->env = *env;
    e->body = NULL;
    if (env->body != NULL && env->body_len > 0) {
        e->body = malloc(env->body_len);
        FAKE_CHECK(e->body != NULL);
        memcpy(e->body, env->body, env->body_len);
        e->env.body = e->body;
    }
    f->q_len++;
    pthread_cond_broadcast(&f->cv);
}

static int fake_write(void *data, const char *buf, size_t len)
{
    return nng_msg_append((nng_msg *)data, buf, len) == 0 ? 0 : -1;
}

/* fake_reply_to routes one accepted message; returns the result for the send reply. */
static hsb_send_result fake_route(fake *f, hsb_envelope *env, bool *early)
{
    hsb_send_result r = {0};
    hsb_envelope out;

    pthread_mutex_lock(&f->mtx);
    env->id = ++f->next_id;
    snprintf(env->from, sizeof(env->from), "%s", f->agent);
    r.id = env->id;
    if (strcmp(env->to, "hold") == 0) {
        f->held++;
        pthread_cond_broadcast(&f->cv);
        while (f->hold && !f->stop) {
            pthread_cond_wait(&f->cv, &f->mtx);
        }
        f->held--;
    } else if (strcmp(env->to, "self") == 0) {
        fake_push_locked(f, env);
    } else if (strcmp(env->to, "echo") == 0 || strcmp(env->to, "early") == 0) {
        out = *env;
        out.id = ++f->next_id;
        out.corr = env->id;
        snprintf(out.from, sizeof(out.from), "%s", env->to);
        snprintf(out.to, sizeof(out.to), "%s", f->agent);
        fake_push_locked(f, &out);
        *early = strcmp(env->to, "early") == 0;
    } else if (strcmp(env->to, "fail") == 0) {
        static const uint8_t body[] = {0x82, 0xa3, 'e', 'r', 'r', 0xa9, 'E',  '_', 'E',
                                       'X',  'P',  'I', 'R', 'E', 'D',  0xa3, 'm', 's',
                                       'g',  0xb0, 'e', 'x', 'p', 'i',  'r',  'e', 'd',
                                       ' ',  'i',  'n', ' ', 'q', 'u',  'e',  'u', 'e'};
        hsb_envelope_init(&out);
        out.id = ++f->next_id;
        out.corr = env->id;
        snprintf(out.from, sizeof(out.from), "sys");
        snprintf(out.type, sizeof(out.type), "sys.error");
        out.body = body;
        out.body_len = sizeof(body);
        fake_push_locked(f, &out);
    } else if (strcmp(env->to, "void") != 0) {
        r.id = 0;
        r.err = HSB_ENOROUTE;
        r.msg = "no agent by that name";
    }
    pthread_mutex_unlock(&f->mtx);
    return r;
}

static void fake_handle(fake *f, hsb_dec *dec, nng_msg *in, nng_msg *out)
{
    msgpack_packer pk;
    hsb_request req;
    hsb_reply rep;
    hsb_err err;

    msgpack_packer_init(&pk, out, fake_write);
    err = hsb_dec_request(dec, nng_msg_body(in), nng_msg_len(in), &req);
    if (err != HSB_OK) {
        pthread_mutex_lock(&f->mtx);
        f->bad_reqs++;
        pthread_mutex_unlock(&f->mtx);
        hsb_enc_error_reply(&pk, err, hsb_dec_errmsg(dec));
        return;
    }
    memset(&rep, 0, sizeof(rep));
    rep.op = req.op;
    rep.ok = true;
    switch (req.op) {
    case HSB_OP_HELLO:
        if (strcmp(req.u.hello.token, "bad") == 0) {
            hsb_enc_error_reply(&pk, HSB_EAUTH, "bad token");
            return;
        }
        pthread_mutex_lock(&f->mtx);
        snprintf(f->agent, sizeof(f->agent), "%s", req.u.hello.agent);
        pthread_mutex_unlock(&f->mtx);
        snprintf(rep.u.hello.session, sizeof(rep.u.hello.session), "s-1");
        rep.u.hello.max_body = HSB_BODY_MAX;
        rep.u.hello.max_batch = HSB_BATCH_MAX;
        break;
    case HSB_OP_SEND: {
        hsb_send_result *res = calloc(req.u.send.n_msgs, sizeof(*res));
        bool early = false;

        pthread_mutex_lock(&f->mtx);
        if (++f->sends_now > f->sends_peak) {
            f->sends_peak = f->sends_now;
        }
        f->send_reqs++;
        if (req.u.send.n_msgs > f->group_max) {
            f->group_max = req.u.send.n_msgs;
        }
        pthread_mutex_unlock(&f->mtx);

        FAKE_CHECK(res != NULL);
        for (size_t i = 0; i < req.u.send.n_msgs; i++) {
            res[i] = fake_route(f, &req.u.send.msgs[i], &early);
        }
        if (early) {
            usleep(100 * 1000);
        }
        rep.u.send.results = res;
        rep.u.send.n_results = req.u.send.n_msgs;
        hsb_enc_reply(&pk, &rep);
        free(res);
        pthread_mutex_lock(&f->mtx);
        f->sends_now--;
        pthread_mutex_unlock(&f->mtx);
        return;
    }
    case HSB_OP_FETCH: {
        hsb_envelope *msgs = NULL;
        fake_env *taken = NULL;
        size_t n = 0;
        int64_t until = tc_now_ms() + req.u.fetch.wait_ms;
        struct timespec ts;

        pthread_mutex_lock(&f->mtx);
        f->n_fetches++;
        for (size_t i = 0; i < req.u.fetch.n_acks && f->n_acks < FAKE_ACKMAX; i++) {
            f->acks[f->n_acks++] = req.u.fetch.acks[i];
        }
        for (size_t i = 0; i < req.u.fetch.n_nacks && f->n_nacks < FAKE_ACKMAX; i++) {
            f->nacks[f->n_nacks++] = req.u.fetch.nacks[i].id;
            snprintf(f->last_nack_reason, sizeof(f->last_nack_reason), "%s",
                     req.u.fetch.nacks[i].reason);
        }
        while (f->q_len == 0 && !f->stop && tc_now_ms() < until) {
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 10 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&f->cv, &f->mtx, &ts);
        }
        n = f->q_len < req.u.fetch.max ? f->q_len : req.u.fetch.max;
        msgs = calloc(n + 1, sizeof(*msgs));
        taken = calloc(n + 1, sizeof(*taken));
        FAKE_CHECK(msgs != NULL);
        FAKE_CHECK(taken != NULL);
        for (size_t i = 0; i < n; i++) {
            taken[i] = f->queue[f->q_head];
            f->q_head = (f->q_head + 1) % FAKE_QMAX;
            f->q_len--;
            msgs[i] = taken[i].env;
            msgs[i].deliveries = 1;
        }
        pthread_mutex_unlock(&f->mtx);
        rep.u.fetch.msgs = msgs;
        rep.u.fetch.n_msgs = n;
        hsb_enc_reply(&pk, &rep);
        for (size_t i = 0; i < n; i++) {
            free(taken[i].body);
        }
        free(taken);
        free(msgs);
        return;
    }
    case HSB_OP_BYE:
        pthread_mutex_lock(&f->mtx);
        f->n_byes++;
        pthread_mutex_unlock(&f->mtx);
        break;
    }
    hsb_enc_reply(&pk, &rep);
}

/* One server context: everything is set up by fake_start on the main thread, so that a cmocka
 * assertion never fails on a worker thread. */
typedef struct fake_worker_ctx {
    fake *f;
    nng_ctx ctx;
    nng_aio *aio;
    hsb_dec dec;
} fake_worker_ctx;

static bool fake_stopping(fake *f)
{
    bool stop;

    pthread_mutex_lock(&f->mtx);
    stop = f->stop;
    pthread_mutex_unlock(&f->mtx);
    return stop;
}

static void *fake_worker(void *arg)
{
    fake_worker_ctx *w = arg;

    for (;;) {
        nng_msg *in, *out;

        nng_ctx_recv(w->ctx, w->aio);
        nng_aio_wait(w->aio);
        if (nng_aio_result(w->aio) != 0) {
            break;
        }
        in = nng_aio_get_msg(w->aio);
        if (nng_msg_alloc(&out, 0) != 0) {
            nng_msg_free(in);
            break;
        }
        fake_handle(w->f, &w->dec, in, out);
        nng_msg_free(in);
        if (fake_stopping(w->f)) {
            nng_msg_free(out);
            break;
        }
        nng_aio_set_msg(w->aio, out);
        nng_ctx_send(w->ctx, w->aio);
        nng_aio_wait(w->aio);
        if (nng_aio_result(w->aio) != 0) {
            nng_msg_free(out);
            break;
        }
    }
    return NULL;
}

static fake_worker_ctx fake_ctxs[FAKE_WORKERS];

/*
 * nng 1.5 may leak a reply that a REP context handed to a pipe just before the fake's socket is
 * closed under it. That is the fake's teardown, not libhsbus: keep LeakSanitizer quiet about
 * allocations made on the fake's worker threads only.
 */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:fake_worker\n";
}

static fake *fake_start(void)
{
    static int seq;
    fake *f = calloc(1, sizeof(*f));

    assert_non_null(f);
    pthread_mutex_init(&f->mtx, NULL);
    pthread_cond_init(&f->cv, NULL);
    snprintf(f->url, sizeof(f->url), "ipc:///tmp/hsbus-test-client-%d-%d.sock", (int)getpid(),
             ++seq);
    assert_int_equal(nng_rep0_open(&f->sock), 0);
    assert_int_equal(nng_listen(f->sock, f->url, NULL, 0), 0);
    for (int i = 0; i < FAKE_WORKERS; i++) {
        fake_worker_ctx *w = &fake_ctxs[i];
        w->f = f;
        assert_int_equal(hsb_dec_init(&w->dec), HSB_OK);
        assert_int_equal(nng_aio_alloc(&w->aio, NULL, NULL), 0);
        assert_int_equal(nng_ctx_open(&w->ctx, f->sock), 0);
        assert_int_equal(pthread_create(&f->workers[i], NULL, fake_worker, w), 0);
    }
    fake_g = f;
    return f;
}

static void fake_stop(fake *f)
{
    pthread_mutex_lock(&f->mtx);
    f->stop = true;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mtx);
    /* Close the contexts first and join the workers, so that no worker is inside nng_ctx_send
     * while the socket is torn down (nng 1.5 does not survive that race). */
    for (int i = 0; i < FAKE_WORKERS; i++) {
        nng_ctx_close(fake_ctxs[i].ctx);
    }
    for (int i = 0; i < FAKE_WORKERS; i++) {
        pthread_join(f->workers[i], NULL);
        nng_aio_free(fake_ctxs[i].aio);
        hsb_dec_fini(&fake_ctxs[i].dec);
    }
    nng_close(f->sock);
    for (size_t i = 0; i < f->q_len; i++) {
        free(f->queue[(f->q_head + i) % FAKE_QMAX].body);
    }
    pthread_cond_destroy(&f->cv);
    pthread_mutex_destroy(&f->mtx);
    fake_g = NULL;
    free(f);
}

static bool fake_acked(fake *f, uint64_t id)
{
    bool found = false;

    pthread_mutex_lock(&f->mtx);
    for (size_t i = 0; i < f->n_acks && !found; i++) {
        found = f->acks[i] == id;
    }
    pthread_mutex_unlock(&f->mtx);
    return found;
}

static bool fake_nacked(fake *f, uint64_t id)
{
    bool found = false;

    pthread_mutex_lock(&f->mtx);
    for (size_t i = 0; i < f->n_nacks && !found; i++) {
        found = f->nacks[i] == id;
    }
    pthread_mutex_unlock(&f->mtx);
    return found;
}

static hsbus_client *tc_connect(fake *f, const char *agent)
{
    hsbus_opts o = {.agent = agent, .token = "good", .timeout_ms = 5000, .poll_ms = 200};
    hsbus_client *c = NULL;

    assert_int_equal(hsbus_connect(f->url, &o, &c), HSBUS_OK);
    assert_non_null(c);
    return c;
}

static void tc_msg(hsbus_msg *m, const char *to, const char *text)
{
    hsbus_msg_init(m);
    snprintf(m->to, sizeof(m->to), "%s", to);
    snprintf(m->type, sizeof(m->type), "test.msg");
    assert_int_equal(hsbus_msg_set_body_str(m, text, strlen(text)), HSBUS_OK);
}

/* The body of m must be the msgpack str text. */
static void tc_assert_body(const hsbus_msg *m, const char *text)
{
    const uint8_t *p;
    size_t n;

    assert_int_equal(hsbus_msg_body_bytes(m, &p, &n), HSBUS_OK);
    assert_int_equal(n, strlen(text));
    assert_memory_equal(p, text, n);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_body_helpers(void **state)
{
    static uint8_t big[70000];
    size_t sizes[] = {0, 10, 31, 32, 255, 256, 65535, 65536, 70000};
    hsbus_msg m;
    const uint8_t *p;
    size_t n;

    (void)state;
    memset(big, 'q', sizeof(big));
    hsbus_msg_init(&m);
    assert_int_equal(m.prio, HSBUS_PRIO_NORMAL);
    assert_int_equal(hsbus_msg_body_bytes(&m, &p, &n), HSBUS_ETYPE);
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        assert_int_equal(hsbus_msg_set_body_bin(&m, big, sizes[i]), HSBUS_OK);
        assert_int_equal(hsbus_msg_body_bytes(&m, &p, &n), HSBUS_OK);
        assert_int_equal(n, sizes[i]);
        assert_int_equal(hsbus_msg_set_body_str(&m, (const char *)big, sizes[i]), HSBUS_OK);
        assert_int_equal(hsbus_msg_body_bytes(&m, &p, &n), HSBUS_OK);
        assert_int_equal(n, sizes[i]);
        assert_memory_equal(p, big, n);
    }
    assert_int_equal(hsbus_msg_set_body_str(&m, "hi", 2), HSBUS_OK);
    assert_int_equal(m.body_len, 3);
    assert_int_equal(m.body[0], 0xa2);
    m.body_len = 2; /* truncated */
    assert_int_equal(hsbus_msg_body_bytes(&m, &p, &n), HSBUS_ETRUNC);
    assert_int_equal(hsbus_msg_set_body_raw(&m, "\xc0", 1), HSBUS_OK);
    assert_int_equal(hsbus_msg_body_bytes(&m, &p, &n), HSBUS_ETYPE);
    assert_int_equal(hsbus_msg_set_body_bin(NULL, "x", 1), HSBUS_EINVAL);
    assert_int_equal(hsbus_msg_set_body_bin(&m, NULL, 1), HSBUS_EINVAL);
    hsbus_msg_clear(&m);
    assert_null(m.body);
    hsbus_msg_clear(NULL);
    hsbus_msg_free(NULL);
    hsbus_close(NULL);
    {
        hsbus_client *none = NULL;
        hsbus_msg *mp = NULL;
        hsbus_close(&none);
        hsbus_msg_free(&mp);
    }
    assert_string_equal(hsbus_err_name(HSBUS_EBUSY), "HSBUS_EBUSY");
    assert_non_null(hsbus_strerror(HSBUS_ETIMEDOUT));
}

static void test_connect_errors(void **state)
{
    hsbus_opts o = {.agent = "tester", .timeout_ms = 2000};
    hsbus_client *c = (hsbus_client *)&o; /* must be cleared on failure */
    fake *f;

    (void)state;
    assert_int_equal(hsbus_connect("ipc:///tmp/hsbus-test-client-nobody.sock", &o, &c), HSBUS_EIO);
    assert_null(c);
    o.agent = NULL;
    assert_int_equal(hsbus_connect("ipc:///tmp/x.sock", &o, &c), HSBUS_EINVAL);
    o.agent = "tester";
    assert_int_equal(hsbus_connect("bogus://x", &o, &c), HSBUS_EINVAL);

    f = fake_start();
    o.token = "bad";
    assert_int_equal(hsbus_connect(f->url, &o, &c), HSBUS_EAUTH);
    assert_null(c);
    assert_non_null(strstr(hsbus_errmsg(NULL), "bad token"));
    o.token = "good";
    assert_int_equal(hsbus_connect(f->url, &o, &c), HSBUS_OK);
    hsbus_close(&c);
    assert_null(c);
    assert_int_equal(f->n_byes, 1);
    fake_stop(f);
}

static void test_send_results(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    hsbus_msg m[3];
    hsbus_result r[3];
    uint64_t id = 0;

    (void)state;
    tc_msg(&m[0], "void", "a");
    tc_msg(&m[1], "nobody", "b");
    tc_msg(&m[2], "void", "c");
    assert_int_equal(hsbus_send_batch(c, m, 3, r), HSBUS_OK);
    assert_int_equal(r[0].err, HSBUS_OK);
    assert_true(r[0].id > 0);
    assert_int_equal(r[1].err, HSBUS_ENOROUTE);
    assert_string_equal(r[1].msg, "no agent by that name");
    assert_int_equal(r[2].err, HSBUS_OK);
    assert_true(r[2].id > r[0].id);

    assert_int_equal(hsbus_send(c, &m[0], &id), HSBUS_OK);
    assert_true(id > r[2].id);
    assert_int_equal(hsbus_send(c, &m[1], &id), HSBUS_ENOROUTE);
    assert_string_equal(hsbus_errmsg(c), "no agent by that name");
    assert_int_equal(hsbus_send_batch(c, m, 0, r), HSBUS_EINVAL);
    for (int i = 0; i < 3; i++) {
        hsbus_msg_clear(&m[i]);
    }
    hsbus_close(&c);
    fake_stop(f);
}

static void test_fetch_acks(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    hsbus_msg m;
    hsbus_msg *got[8];
    size_t n = 0;

    (void)state;
    /* Nothing queued: a short long poll returns empty. */
    assert_int_equal(hsbus_fetch(c, 8, 100, got, &n), HSBUS_OK);
    assert_int_equal(n, 0);

    for (int i = 0; i < 3; i++) {
        char text[16];
        snprintf(text, sizeof(text), "m%d", i);
        tc_msg(&m, "self", text);
        assert_int_equal(hsbus_send(c, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    assert_int_equal(hsbus_fetch(c, 8, 1000, got, &n), HSBUS_OK);
    assert_int_equal(n, 3);
    tc_assert_body(got[0], "m0");
    tc_assert_body(got[2], "m2");
    assert_string_equal(got[0]->from, "tester");
    assert_int_equal(got[0]->deliveries, 1);
    assert_int_equal(hsbus_ack(c, got[0]->id), HSBUS_OK);
    assert_int_equal(hsbus_nack(c, got[1]->id, "cannot parse"), HSBUS_OK);
    assert_int_equal(hsbus_ack(c, 0), HSBUS_EINVAL);
    assert_false(fake_acked(f, got[0]->id));

    /* The acks ride on the next fetch. */
    assert_int_equal(hsbus_fetch(c, 8, 0, got + 3, &n), HSBUS_OK);
    assert_int_equal(n, 0);
    assert_true(fake_acked(f, got[0]->id));
    assert_true(fake_nacked(f, got[1]->id));
    assert_string_equal(f->last_nack_reason, "cannot parse");

    /* hsbus_flush_acks sends them at once. */
    assert_int_equal(hsbus_ack(c, got[2]->id), HSBUS_OK);
    assert_int_equal(hsbus_flush_acks(c), HSBUS_OK);
    assert_true(fake_acked(f, got[2]->id));
    assert_int_equal(hsbus_flush_acks(c), HSBUS_OK); /* nothing pending: no request */

    assert_int_equal(hsbus_fetch(c, 0, 0, got, &n), HSBUS_EINVAL);
    for (int i = 0; i < 3; i++) {
        hsbus_msg_free(&got[i]);
    }
    hsbus_close(&c);
    fake_stop(f);
}

typedef struct tc_req_arg {
    hsbus_client *c;
    int thread;
    int count;
    int failures;
} tc_req_arg;

static void *tc_req_thread(void *p)
{
    tc_req_arg *a = p;

    for (int i = 0; i < a->count; i++) {
        char text[32];
        hsbus_msg m, *reply = NULL;
        const uint8_t *b;
        size_t n;

        snprintf(text, sizeof(text), "t%d-r%d", a->thread, i);
        tc_msg(&m, (i % 5) == 4 ? "early" : "echo", text);
        if (hsbus_request(a->c, &m, 3000, &reply) != HSBUS_OK || reply == NULL ||
            hsbus_msg_body_bytes(reply, &b, &n) != HSBUS_OK || n != strlen(text) ||
            memcmp(b, text, n) != 0) {
            a->failures++;
        }
        hsbus_msg_free(&reply);
        hsbus_msg_clear(&m);
    }
    return NULL;
}

/* tc_run_requesters runs n threads (n <= 16) of count requests each on c; all must succeed. */
static void tc_run_requesters(hsbus_client *c, int n, int count)
{
    pthread_t th[16];
    tc_req_arg args[16];

    assert_true(n <= 16);
    for (int i = 0; i < n; i++) {
        args[i] = (tc_req_arg){.c = c, .thread = i, .count = count};
        assert_int_equal(pthread_create(&th[i], NULL, tc_req_thread, &args[i]), 0);
    }
    for (int i = 0; i < n; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(args[i].failures, 0);
    }
}

static void test_request_parallel(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");

    (void)state;
    tc_run_requesters(c, 16, 25);
    /* Pipelining, asserted as behaviour rather than time: while one "early" send is held for
     * 100 ms by the fake daemon, other threads' sends reach it. */
    pthread_mutex_lock(&f->mtx);
    int peak = f->sends_peak;
    pthread_mutex_unlock(&f->mtx);
    assert_true(peak > 1);
    hsbus_close(&c);
    fake_stop(f);
}

/* More callers than contexts: the extra callers wait for a free context instead of failing. */
static void test_request_few_contexts(void **state)
{
    fake *f = fake_start();
    hsbus_opts o = {.agent = "tester", .timeout_ms = 5000, .contexts = 2};
    hsbus_client *c = NULL;

    (void)state;
    assert_int_equal(hsbus_connect(f->url, &o, &c), HSBUS_OK);
    tc_run_requesters(c, 8, 10);
    hsbus_close(&c);
    fake_stop(f);
}

static void test_request_errors(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    hsbus_msg m, *reply = (hsbus_msg *)&m;

    (void)state;
    tc_msg(&m, "fail", "x");
    assert_int_equal(hsbus_request(c, &m, 2000, &reply), HSBUS_EEXPIRED);
    assert_null(reply);
    assert_string_equal(hsbus_errmsg(c), "expired in queue");
    hsbus_msg_clear(&m);

    tc_msg(&m, "nobody", "x");
    assert_int_equal(hsbus_request(c, &m, 2000, &reply), HSBUS_ENOROUTE);
    hsbus_msg_clear(&m);

    tc_msg(&m, "void", "x");
    assert_int_equal(hsbus_request(c, &m, 200, &reply), HSBUS_ETIMEDOUT);
    assert_null(reply);
    hsbus_msg_clear(&m);
    hsbus_close(&c);
    fake_stop(f);
}

/* ---- the send group ---------------------------------------------------------------------- */

typedef struct tc_send_arg {
    hsbus_client *c;
    const char *to;
    hsbus_err err;
    char errmsg[128];
} tc_send_arg;

static void *tc_send_thread(void *p)
{
    tc_send_arg *a = p;
    hsbus_msg m;

    tc_msg(&m, a->to, "x");
    a->err = hsbus_send(a->c, &m, NULL);
    snprintf(a->errmsg, sizeof(a->errmsg), "%s", hsbus_errmsg(a->c));
    hsbus_msg_clear(&m);
    return NULL;
}

static int fake_held(fake *f)
{
    int held;

    pthread_mutex_lock(&f->mtx);
    held = f->held;
    pthread_mutex_unlock(&f->mtx);
    return held;
}

/* Both send groups of c (HSBUS_GROUPS) are made to carry a send to "hold", one at a time (two
 * started together could share one group), and the fake keeps both sends until fake_release:
 * whatever is sent next queues behind them in the client. */
enum { N_HOLD = 2 };

static void tc_hold_groups(fake *f, hsbus_client *c, tc_send_arg *hold, pthread_t *th)
{
    pthread_mutex_lock(&f->mtx);
    f->hold = true;
    pthread_mutex_unlock(&f->mtx);
    for (int i = 0; i < N_HOLD; i++) {
        hold[i] = (tc_send_arg){.c = c, .to = "hold"};
        assert_int_equal(pthread_create(&th[i], NULL, tc_send_thread, &hold[i]), 0);
        while (fake_held(f) < i + 1) { /* this send is on the wire now */
            usleep(1000);
        }
    }
}

static void fake_release(fake *f)
{
    pthread_mutex_lock(&f->mtx);
    f->hold = false;
    pthread_cond_broadcast(&f->cv);
    pthread_mutex_unlock(&f->mtx);
}

/*
 * While both send groups are held by the fake daemon, single sends from other threads
 * queue and then go out together in one request; one malformed message among them makes the
 * daemon refuse that request as a whole, and every message is then sent again alone, so each
 * caller gets its own message's answer: the valid ones are accepted, the malformed one refused.
 */
static void test_send_group(void **state)
{
    enum { N_GOOD = 6 };
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    tc_send_arg hold[N_HOLD], good[N_GOOD], bad;
    pthread_t th_hold[N_HOLD], th_good[N_GOOD], th_bad;

    (void)state;
    tc_hold_groups(f, c, hold, th_hold);
    for (int i = 0; i < N_GOOD; i++) {
        good[i] = (tc_send_arg){.c = c, .to = "void"};
        assert_int_equal(pthread_create(&th_good[i], NULL, tc_send_thread, &good[i]), 0);
    }
    bad = (tc_send_arg){.c = c, .to = "Not A Name"};
    assert_int_equal(pthread_create(&th_bad, NULL, tc_send_thread, &bad), 0);
    usleep(200 * 1000); /* let them queue behind the held groups (not a timing assertion) */
    fake_release(f);

    for (int i = 0; i < N_HOLD; i++) {
        pthread_join(th_hold[i], NULL);
        assert_int_equal(hold[i].err, HSBUS_OK);
    }
    for (int i = 0; i < N_GOOD; i++) {
        pthread_join(th_good[i], NULL);
        assert_int_equal(good[i].err, HSBUS_OK);
        /* Another message's error does not become this caller's text. */
        assert_string_equal(good[i].errmsg, "");
    }
    pthread_join(th_bad, NULL);
    assert_int_equal(bad.err, HSBUS_EBADMSG); /* the wire carries E_BADMSG */
    assert_non_null(strstr(bad.errmsg, "to"));
    pthread_mutex_lock(&f->mtx);
    /* The queued sends went out as one group (refused whole: a second bad request is the bad
     * message alone), and fewer requests were accepted than messages were sent. */
    assert_true(f->bad_reqs == 2);
    assert_true(f->send_reqs < N_HOLD + N_GOOD + 2);
    pthread_mutex_unlock(&f->mtx);
    hsbus_close(&c);
    fake_stop(f);
}

typedef struct tc_timeout_arg {
    hsbus_client *c;
    hsbus_err err;
    volatile int finished;
} tc_timeout_arg;

static void *tc_timeout_thread(void *p)
{
    tc_timeout_arg *a = p;
    hsbus_msg m, *reply = NULL;

    tc_msg(&m, "void", "x"); /* accepted, never answered */
    a->err = hsbus_request(a->c, &m, 300, &reply);
    hsbus_msg_clear(&m);
    __atomic_store_n(&a->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

/*
 * Requests that queued behind busy groups and went out in a later group still honour
 * their timeout: each returns HSBUS_ETIMEDOUT although no reply ever comes (they used to sleep
 * until a reply or the client's end).
 */
static void test_request_timeout_grouped(void **state)
{
    enum { N_REQ = 4 };
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    tc_send_arg hold[N_HOLD];
    tc_timeout_arg req[N_REQ];
    pthread_t th_hold[N_HOLD], th_req[N_REQ];
    int finished = 0;

    (void)state;
    tc_hold_groups(f, c, hold, th_hold);
    for (int i = 0; i < N_REQ; i++) {
        req[i] = (tc_timeout_arg){.c = c};
        assert_int_equal(pthread_create(&th_req[i], NULL, tc_timeout_thread, &req[i]), 0);
    }
    usleep(100 * 1000); /* let them queue (not a timing assertion) */
    fake_release(f);
    /* Bounded wait: a request stuck past its timeout fails the test instead of hanging it. */
    for (int t = 0; t < 1000 && finished < N_REQ; t++) {
        usleep(10 * 1000);
        finished = 0;
        for (int i = 0; i < N_REQ; i++) {
            finished += __atomic_load_n(&req[i].finished, __ATOMIC_ACQUIRE);
        }
    }
    assert_int_equal(finished, N_REQ);
    for (int i = 0; i < N_REQ; i++) {
        pthread_join(th_req[i], NULL);
        assert_int_equal(req[i].err, HSBUS_ETIMEDOUT);
    }
    for (int i = 0; i < N_HOLD; i++) {
        pthread_join(th_hold[i], NULL);
        assert_int_equal(hold[i].err, HSBUS_OK);
    }
    hsbus_close(&c);
    fake_stop(f);
}

typedef struct tc_busy_arg {
    hsbus_client *c;
    volatile int stop;
    int failures;
} tc_busy_arg;

/* Requests to "early" back to back: the fake holds each send 100 ms after routing its reply, so
 * a send group is on the wire nearly all the time. */
static void *tc_busy_thread(void *p)
{
    tc_busy_arg *a = p;

    while (!__atomic_load_n(&a->stop, __ATOMIC_ACQUIRE)) {
        hsbus_msg m, *reply = NULL;
        tc_msg(&m, "early", "busy");
        if (hsbus_request(a->c, &m, 3000, &reply) != HSBUS_OK) {
            a->failures++;
        }
        hsbus_msg_free(&reply);
        hsbus_msg_clear(&m);
    }
    return NULL;
}

/*
 * A reply that no request waits for (an answer to a plain hsbus_send) reaches hsbus_fetch while
 * other threads keep requests on the wire: it is held back only until the send groups that were
 * on the wire when it came are answered (a few 100 ms holds), not for the whole call timeout
 * (60 s here; the fetch gives up after 20 s, so the two outcomes are far apart).
 */
static void test_unclaimed_reply_not_held(void **state)
{
    fake *f = fake_start();
    hsbus_opts o = {.agent = "tester", .timeout_ms = 60000, .poll_ms = 200};
    hsbus_client *c = NULL;
    tc_busy_arg busy = {0};
    pthread_t th[2];
    hsbus_msg m, *got[4];
    uint64_t id = 0;
    size_t n = 0;

    (void)state;
    assert_int_equal(hsbus_connect(f->url, &o, &c), HSBUS_OK);
    busy.c = c;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, tc_busy_thread, &busy), 0);
    }
    usleep(50 * 1000); /* the requests are flowing (not a timing assertion) */
    tc_msg(&m, "echo", "for the user");
    assert_int_equal(hsbus_send(c, &m, &id), HSBUS_OK);
    hsbus_msg_clear(&m);
    assert_int_equal(hsbus_fetch(c, 4, 20000, got, &n), HSBUS_OK);
    __atomic_store_n(&busy.stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(busy.failures, 0);
    assert_int_equal(n, 1);
    assert_int_equal(got[0]->corr, id);
    tc_assert_body(got[0], "for the user");
    (void)hsbus_ack(c, got[0]->id);
    hsbus_msg_free(&got[0]);
    hsbus_close(&c);
    fake_stop(f);
}

/* Many threads making requests at once share send requests: fewer sends than messages. */
static void test_request_grouped(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");

    (void)state;
    tc_run_requesters(c, 16, 50);
    pthread_mutex_lock(&f->mtx);
    assert_true(f->group_max > 1);
    assert_true(f->send_reqs < 16 * 50);
    pthread_mutex_unlock(&f->mtx);
    hsbus_close(&c);
    fake_stop(f);
}

/* ---- asynchronous requests --------------------------------------------------------------- */

/* What the callbacks saw. They run on the client's completion thread, where cmocka must not
 * assert: they record, and the test thread asserts. */
typedef struct tc_async {
    pthread_mutex_t mtx;
    pthread_cond_t cv;
    int per_chain; /* requests each chain makes */
    int running;   /* chains not finished */
    int calls;     /* callbacks run */
    int ok;        /* replies with the right body */
    int bad;       /* anything else */
    int threads;   /* distinct callback threads seen (1 expected) */
    pthread_t cb_thread;
    hsbus_err errs[8]; /* one-shot requests: each callback's code and text, by index */
    char texts[8][128];
    hsbus_err again[8]; /* what hsbus_request_async returned when called from that callback */
} tc_async;

typedef struct tc_chain {
    tc_async *a;
    int id, n;
    char text[32];
    hsbus_msg m;
} tc_chain;

static void tc_async_init(tc_async *a)
{
    memset(a, 0, sizeof(*a));
    pthread_mutex_init(&a->mtx, NULL);
    pthread_cond_init(&a->cv, NULL);
}

/* tc_async_wait waits (bounded: 30 s, so a lost callback fails the test instead of hanging it)
 * until calls reaches want; returns the calls seen. */
static int tc_async_wait(tc_async *a, int want)
{
    int calls;

    pthread_mutex_lock(&a->mtx);
    for (int t = 0; t < 3000 && a->calls < want; t++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&a->cv, &a->mtx, &ts);
    }
    calls = a->calls;
    pthread_mutex_unlock(&a->mtx);
    return calls;
}

/* tc_chain_next makes chain ch's next request (every 7th to "early": its reply overtakes the
 * send's answer). No cmocka here: this runs on the completion thread too. */
static hsbus_err tc_chain_next(hsbus_client *c, tc_chain *ch);

static void tc_chain_cb(hsbus_client *c, hsbus_err err, hsbus_msg *reply, void *arg)
{
    tc_chain *ch = arg;
    tc_async *a = ch->a;
    const uint8_t *b;
    size_t n;
    bool good = err == HSBUS_OK && reply != NULL &&
                hsbus_msg_body_bytes(reply, &b, &n) == HSBUS_OK && n == strlen(ch->text) &&
                memcmp(b, ch->text, n) == 0;
    bool more;

    hsbus_msg_free(&reply);
    pthread_mutex_lock(&a->mtx);
    if (a->threads == 0 || !pthread_equal(a->cb_thread, pthread_self())) {
        a->threads++;
        a->cb_thread = pthread_self();
    }
    a->calls++;
    if (good) {
        a->ok++;
    } else {
        a->bad++;
    }
    more = ++ch->n < a->per_chain;
    pthread_mutex_unlock(&a->mtx);
    if (more && tc_chain_next(c, ch) == HSBUS_OK) {
        return;
    }
    pthread_mutex_lock(&a->mtx);
    a->running--;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mtx);
}

static hsbus_err tc_chain_next(hsbus_client *c, tc_chain *ch)
{
    hsbus_err err;

    snprintf(ch->text, sizeof(ch->text), "c%d-r%d", ch->id, ch->n);
    hsbus_msg_clear(&ch->m);
    snprintf(ch->m.to, sizeof(ch->m.to), "%s", ch->n % 7 == 6 ? "early" : "echo");
    snprintf(ch->m.type, sizeof(ch->m.type), "test.msg");
    err = hsbus_msg_set_body_str(&ch->m, ch->text, strlen(ch->text));
    if (err == HSBUS_OK) {
        err = hsbus_request_async(c, &ch->m, 5000, tc_chain_cb, ch);
    }
    hsbus_msg_clear(&ch->m); /* the library copied it */
    return err;
}

/*
 * Chains of hsbus_request_async, each callback making the chain's next request: every reply
 * reaches its own callback (the right body), all callbacks run on one thread, and requests made
 * by callbacks for replies that came together go out together (send requests carried several
 * messages, fewer requests than messages).
 */
static void test_request_async_chains(void **state)
{
    enum { N_CHAINS = 8, PER_CHAIN = 20 };
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    tc_chain ch[N_CHAINS];
    tc_async a;

    (void)state;
    tc_async_init(&a);
    a.per_chain = PER_CHAIN;
    a.running = N_CHAINS;
    for (int i = 0; i < N_CHAINS; i++) {
        ch[i] = (tc_chain){.a = &a, .id = i};
        hsbus_msg_init(&ch[i].m);
        assert_int_equal(tc_chain_next(c, &ch[i]), HSBUS_OK);
    }
    assert_int_equal(tc_async_wait(&a, N_CHAINS * PER_CHAIN), N_CHAINS * PER_CHAIN);
    pthread_mutex_lock(&a.mtx);
    while (a.running > 0) { /* the last callbacks are returning */
        pthread_cond_wait(&a.cv, &a.mtx);
    }
    pthread_mutex_unlock(&a.mtx);
    assert_int_equal(a.ok, N_CHAINS * PER_CHAIN);
    assert_int_equal(a.bad, 0);
    assert_int_equal(a.threads, 1);
    pthread_mutex_lock(&f->mtx);
    assert_true(f->group_max > 1);
    assert_true(f->send_reqs < N_CHAINS * PER_CHAIN);
    pthread_mutex_unlock(&f->mtx);
    hsbus_close(&c);
    fake_stop(f);
}

/* A one-shot callback: records its code and text under index (size_t)arg, and tries another
 * request from inside the callback. */
static tc_async *tc_one_state;

static void tc_one_cb(hsbus_client *c, hsbus_err err, hsbus_msg *reply, void *arg)
{
    tc_async *a = tc_one_state;
    size_t i = (size_t)(uintptr_t)arg;
    hsbus_msg m;
    hsbus_err again;

    hsbus_msg_init(&m);
    snprintf(m.to, sizeof(m.to), "void");
    again = hsbus_request_async(c, &m, 60000, tc_one_cb, (void *)(uintptr_t)7);
    pthread_mutex_lock(&a->mtx);
    a->errs[i] = err;
    a->again[i] = again;
    snprintf(a->texts[i], sizeof(a->texts[i]), "%s", hsbus_errmsg(c));
    if (err == HSBUS_OK && reply != NULL) {
        a->ok++;
    }
    a->calls++;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mtx);
    hsbus_msg_free(&reply);
}

/* Errors reach the callback with their text: a sys.error, a refused message, a timeout. */
static void test_request_async_errors(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    hsbus_msg m;
    tc_async a;

    (void)state;
    tc_async_init(&a);
    tc_one_state = &a;
    tc_msg(&m, "fail", "x");
    assert_int_equal(hsbus_request_async(c, &m, 2000, NULL, NULL), HSBUS_EINVAL);
    assert_int_equal(hsbus_request_async(c, &m, 2000, tc_one_cb, (void *)0), HSBUS_OK);
    hsbus_msg_clear(&m);
    assert_int_equal(tc_async_wait(&a, 1), 1);
    assert_int_equal(a.errs[0], HSBUS_EEXPIRED);
    assert_string_equal(a.texts[0], "expired in queue");

    tc_msg(&m, "nobody", "x");
    assert_int_equal(hsbus_request_async(c, &m, 2000, tc_one_cb, (void *)1), HSBUS_OK);
    hsbus_msg_clear(&m);
    assert_int_equal(tc_async_wait(&a, 2), 2);
    assert_int_equal(a.errs[1], HSBUS_ENOROUTE);
    assert_string_equal(a.texts[1], "no agent by that name");

    tc_msg(&m, "void", "x"); /* accepted, never answered */
    assert_int_equal(hsbus_request_async(c, &m, 200, tc_one_cb, (void *)2), HSBUS_OK);
    hsbus_msg_clear(&m);
    assert_int_equal(tc_async_wait(&a, 3), 3);
    assert_int_equal(a.errs[2], HSBUS_ETIMEDOUT);
    assert_non_null(strstr(a.texts[2], "no reply"));
    assert_int_equal(a.ok, 0);

    /* Each callback above made one more request to "void" (60 s, never answered): hsbus_close
     * calls each of them once, with HSBUS_ECLOSED, before it returns; a request made from such a
     * callback is refused (its callback is never called). */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(a.again[i], HSBUS_OK);
    }
    hsbus_close(&c);
    assert_int_equal(a.calls, 6);
    assert_int_equal(a.errs[7], HSBUS_ECLOSED);
    assert_int_equal(a.again[7], HSBUS_ECLOSED);
    fake_stop(f);
}

/* Async requests that queued behind both held groups, one of them malformed: the group is
 * refused whole, each message is sent again alone, and every callback gets its own answer. */
static void test_request_async_refused_group(void **state)
{
    enum { N_GOOD = 4 };
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    tc_send_arg hold[N_HOLD];
    pthread_t th_hold[N_HOLD];
    tc_chain ch[N_GOOD];
    hsbus_msg m;
    tc_async a;

    (void)state;
    tc_async_init(&a);
    tc_one_state = &a;
    a.per_chain = 1;
    a.running = N_GOOD;
    tc_hold_groups(f, c, hold, th_hold);
    for (int i = 0; i < N_GOOD; i++) {
        ch[i] = (tc_chain){.a = &a, .id = i, .n = 1}; /* n = 1: "echo", and no next request */
        hsbus_msg_init(&ch[i].m);
        assert_int_equal(tc_chain_next(c, &ch[i]), HSBUS_OK);
    }
    tc_msg(&m, "Not A Name", "x");
    assert_int_equal(hsbus_request_async(c, &m, 5000, tc_one_cb, (void *)3), HSBUS_OK);
    hsbus_msg_clear(&m);
    usleep(100 * 1000); /* nothing can be sent while both groups are held (not a timing test) */
    pthread_mutex_lock(&a.mtx);
    assert_int_equal(a.calls, 0);
    pthread_mutex_unlock(&a.mtx);
    fake_release(f);
    /* 4 replies and the refusal; the refusal's callback also made one "void" request */
    assert_int_equal(tc_async_wait(&a, N_GOOD + 1), N_GOOD + 1);
    for (int i = 0; i < N_HOLD; i++) {
        pthread_join(th_hold[i], NULL);
        assert_int_equal(hold[i].err, HSBUS_OK);
    }
    assert_int_equal(a.ok, N_GOOD);
    assert_int_equal(a.bad, 0);
    assert_int_equal(a.errs[3], HSBUS_EBADMSG);
    pthread_mutex_lock(&f->mtx);
    assert_int_equal(f->bad_reqs, 2); /* the group, then the bad message alone */
    pthread_mutex_unlock(&f->mtx);
    hsbus_close(&c);
    fake_stop(f);
}

typedef struct tc_handler_state {
    pthread_mutex_t mtx;
    int seen;
    int fails_left;
} tc_handler_state;

static hsbus_err tc_handler(hsbus_client *c, const hsbus_msg *msg, void *arg)
{
    tc_handler_state *s = arg;
    hsbus_err rv = HSBUS_OK;

    (void)c;
    pthread_mutex_lock(&s->mtx);
    s->seen++;
    if (s->fails_left > 0) {
        s->fails_left--;
        rv = HSBUS_EBUSY;
    }
    pthread_mutex_unlock(&s->mtx);
    (void)msg;
    return rv;
}

static void test_handler(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    tc_handler_state hs = {.fails_left = 1};
    hsbus_msg m;
    hsbus_msg *got[1];
    size_t n;
    int64_t until;

    (void)state;
    pthread_mutex_init(&hs.mtx, NULL);
    assert_int_equal(hsbus_set_handler(c, tc_handler, &hs), HSBUS_OK);
    assert_int_equal(hsbus_start(c, 2), HSBUS_OK);
    assert_int_equal(hsbus_start(c, 0), HSBUS_EINVAL);
    assert_int_equal(hsbus_fetch(c, 1, 0, got, &n), HSBUS_EINVAL);
    for (int i = 0; i < 5; i++) {
        tc_msg(&m, "self", "h");
        assert_int_equal(hsbus_send(c, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    until = tc_now_ms() + 3000;
    for (;;) {
        bool done;
        pthread_mutex_lock(&f->mtx);
        done = f->n_acks + f->n_nacks >= 5;
        pthread_mutex_unlock(&f->mtx);
        if (done || tc_now_ms() > until) {
            break;
        }
        usleep(10 * 1000);
    }
    assert_int_equal(hs.seen, 5);
    assert_int_equal(f->n_acks, 4);
    assert_int_equal(f->n_nacks, 1);
    assert_string_equal(f->last_nack_reason, hsbus_strerror(HSBUS_EBUSY));
    hsbus_close(&c);
    pthread_mutex_destroy(&hs.mtx);
    fake_stop(f);
}

typedef struct tc_nested_state {
    pthread_mutex_t mtx;
    int ok;
    int failed;
} tc_nested_state;

/* A handler that makes a request of its own: needs a second receiver to fetch the reply. */
static hsbus_err tc_nested_handler(hsbus_client *c, const hsbus_msg *msg, void *arg)
{
    tc_nested_state *s = arg;
    hsbus_msg m, *reply = NULL;
    hsbus_err err;

    (void)msg;
    tc_msg(&m, "echo", "inner");
    err = hsbus_request(c, &m, 2000, &reply);
    pthread_mutex_lock(&s->mtx);
    if (err == HSBUS_OK) {
        s->ok++;
    } else {
        s->failed++;
    }
    pthread_mutex_unlock(&s->mtx);
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&m);
    usleep(50 * 1000); /* still inside the handler when the test closes the client */
    return HSBUS_OK;
}

static void test_handler_nested_request(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    tc_nested_state ns = {.ok = 0};
    hsbus_msg m;
    int64_t until;

    (void)state;
    pthread_mutex_init(&ns.mtx, NULL);
    assert_int_equal(hsbus_set_handler(c, tc_nested_handler, &ns), HSBUS_OK);
    assert_int_equal(hsbus_start(c, 1), HSBUS_OK);
    for (int i = 0; i < 3; i++) {
        tc_msg(&m, "self", "outer");
        assert_int_equal(hsbus_send(c, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    until = tc_now_ms() + 5000;
    for (;;) {
        int done;
        pthread_mutex_lock(&ns.mtx);
        done = ns.ok + ns.failed;
        pthread_mutex_unlock(&ns.mtx);
        if (done >= 3 || tc_now_ms() > until) {
            break;
        }
        usleep(5 * 1000);
    }
    assert_int_equal(ns.ok, 3);
    assert_int_equal(ns.failed, 0);
    /* One more, and close while its handler runs: close waits for it, no deadlock. */
    tc_msg(&m, "self", "outer");
    assert_int_equal(hsbus_send(c, &m, NULL), HSBUS_OK);
    hsbus_msg_clear(&m);
    usleep(20 * 1000);
    hsbus_close(&c);
    pthread_mutex_destroy(&ns.mtx);
    fake_stop(f);
}

/* With a receiver thread running, hsbus_fetch drains the local queue, which bounds the credit. */
static void test_receiver_queue(void **state)
{
    fake *f = fake_start();
    hsbus_opts o = {.agent = "tester", .timeout_ms = 5000, .poll_ms = 100, .queue_max = 3};
    hsbus_client *c = NULL;
    hsbus_msg m, *reply = NULL;
    hsbus_msg *got[8];
    size_t n = 0, total = 0;
    int64_t until;

    (void)state;
    assert_int_equal(hsbus_connect(f->url, &o, &c), HSBUS_OK);
    tc_msg(&m, "echo", "r");
    assert_int_equal(hsbus_request(c, &m, 2000, &reply), HSBUS_OK); /* starts the receiver */
    assert_int_equal(reply->corr != 0, true);
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&m);
    for (int i = 0; i < 7; i++) {
        tc_msg(&m, "self", "q");
        assert_int_equal(hsbus_send(c, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    usleep(300 * 1000);
    /* The receiver stopped asking once the local queue was full: the rest wait at the daemon. */
    pthread_mutex_lock(&f->mtx);
    assert_true(f->q_len >= 4);
    pthread_mutex_unlock(&f->mtx);
    until = tc_now_ms() + 3000;
    while (total < 7 && tc_now_ms() < until) {
        assert_int_equal(hsbus_fetch(c, 8, 200, got, &n), HSBUS_OK);
        assert_true(n <= 3);
        for (size_t i = 0; i < n; i++) {
            tc_assert_body(got[i], "q");
            assert_int_equal(hsbus_ack(c, got[i]->id), HSBUS_OK);
            hsbus_msg_free(&got[i]);
        }
        total += n;
    }
    assert_int_equal(total, 7);
    /* The receiver carries the acks on its next fetch (poll_ms 100). */
    until = tc_now_ms() + 2000;
    for (;;) {
        size_t acked;
        pthread_mutex_lock(&f->mtx);
        acked = f->n_acks;
        pthread_mutex_unlock(&f->mtx);
        if (acked >= 8 || tc_now_ms() > until) { /* 7 + the auto-acked reply */
            assert_int_equal(acked, 8);
            break;
        }
        usleep(10 * 1000);
    }
    hsbus_close(&c);
    fake_stop(f);
}

static void test_daemon_gone(void **state)
{
    fake *f = fake_start();
    hsbus_client *c = tc_connect(f, "tester");
    hsbus_msg m, *reply = NULL;
    hsbus_err err;

    (void)state;
    assert_int_equal(hsbus_wait(c, 50), HSBUS_ETIMEDOUT);
    fake_stop(f);
    assert_int_equal(hsbus_wait(c, 2000), HSBUS_ECLOSED);
    tc_msg(&m, "void", "x");
    err = hsbus_send(c, &m, NULL);
    assert_true(err == HSBUS_ECLOSED || err == HSBUS_EIO || err == HSBUS_ETIMEDOUT);
    err = hsbus_request(c, &m, 200, &reply);
    assert_true(err == HSBUS_ECLOSED || err == HSBUS_EIO || err == HSBUS_ETIMEDOUT);
    hsbus_msg_clear(&m);
    hsbus_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_body_helpers),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_send_results),
        cmocka_unit_test(test_fetch_acks),
        cmocka_unit_test(test_request_parallel),
        cmocka_unit_test(test_request_few_contexts),
        cmocka_unit_test(test_request_errors),
        cmocka_unit_test(test_handler),
        cmocka_unit_test(test_receiver_queue),
        cmocka_unit_test(test_handler_nested_request),
        cmocka_unit_test(test_daemon_gone),
        cmocka_unit_test(test_send_group),
        cmocka_unit_test(test_request_grouped),
        cmocka_unit_test(test_request_timeout_grouped),
        cmocka_unit_test(test_unclaimed_reply_not_held),
        cmocka_unit_test(test_request_async_chains),
        cmocka_unit_test(test_request_async_errors),
        cmocka_unit_test(test_request_async_refused_group),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
