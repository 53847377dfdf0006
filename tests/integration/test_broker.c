/*
 * tests/integration/test_broker.c - black-box tests of hsbusd: a real daemon process, real ipc
 * sockets, libhsbus clients (and a raw nng socket where a client must misbehave).
 *
 * Every test starts its own daemon with the settings it needs and stops it with SIGTERM, asserting
 * a clean exit (0). Waits are bounded; nothing asserts a timing.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <hsbus.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

#include "harness.h"
#include "proto/codec.h"

/* ---- helpers ----------------------------------------------------------------------------- */

static const char *tb_self; /* argv[0], for child processes that exec this binary */

/* The child role of t_redelivery_after_client_dies: connect as "worker", fetch one message and
 * exit without acking it or saying bye. */
static int tb_fetch_and_die(const char *url)
{
    hsbus_opts o = {.agent = "worker", .timeout_ms = 10000};
    hsbus_client *w = NULL;
    if (hsbus_connect(url, &o, &w) != HSBUS_OK) {
        return 2;
    }
    hsbus_msg *got[1];
    size_t n = 0;
    if (hsbus_fetch(w, 1, 10000, got, &n) != HSBUS_OK || n != 1) {
        return 3;
    }
    _exit(0);
}

static hsbus_client *tb_connect(const ith_daemon *d, const char *agent, const char *const *handles,
                                size_t nh, const char *const *subs, size_t ns)
{
    hsbus_opts o = {
        .agent = agent,
        .handles = handles,
        .n_handles = nh,
        .subscribes = subs,
        .n_subscribes = ns,
        .timeout_ms = 10000,
    };
    hsbus_client *c = NULL;
    hsbus_err err = hsbus_connect(d->url, &o, &c);
    if (err != HSBUS_OK) {
        fprintf(stderr, "connect %s: %s (%s)\n", agent, hsbus_err_name(err), hsbus_errmsg(NULL));
    }
    assert_int_equal(err, HSBUS_OK);
    return c;
}

static void tb_msg(hsbus_msg *m, const char *to, const char *type, const char *topic,
                   const char *body)
{
    hsbus_msg_init(m);
    if (to != NULL) {
        snprintf(m->to, sizeof(m->to), "%s", to);
    }
    if (type != NULL) {
        snprintf(m->type, sizeof(m->type), "%s", type);
    }
    if (topic != NULL) {
        snprintf(m->topic, sizeof(m->topic), "%s", topic);
    }
    if (body != NULL) {
        assert_int_equal(hsbus_msg_set_body_str(m, body, strlen(body)), HSBUS_OK);
    }
}

/* tb_send sends one message and returns the daemon's per-message code. */
static hsbus_err tb_send(hsbus_client *c, hsbus_msg *m, uint64_t *id)
{
    hsbus_err err = hsbus_send(c, m, id);
    return err;
}

/* tb_body_is reports whether a message's body is the msgpack str s. */
static bool tb_body_is(const hsbus_msg *m, const char *s)
{
    const uint8_t *p;
    size_t n;
    if (hsbus_msg_body_bytes(m, &p, &n) != HSBUS_OK) {
        return false;
    }
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* tb_fetch fetches up to max messages, waiting up to wait_ms; returns how many (in msgs). */
static size_t tb_fetch(hsbus_client *c, size_t max, int wait_ms, hsbus_msg **msgs)
{
    size_t n = 0;
    hsbus_err err = hsbus_fetch(c, max, wait_ms, msgs, &n);
    if (err != HSBUS_OK) {
        fprintf(stderr, "fetch: %s (%s)\n", hsbus_err_name(err), hsbus_errmsg(c));
    }
    assert_int_equal(err, HSBUS_OK);
    return n;
}

/* tb_fetch_one waits (bounded) until one message arrives and returns it. */
static hsbus_msg *tb_fetch_one(hsbus_client *c, int wait_ms)
{
    hsbus_msg *m[1];
    size_t n = tb_fetch(c, 1, wait_ms, m);
    assert_int_equal(n, 1);
    return m[0];
}

static void tb_free_all(hsbus_msg **msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        hsbus_msg_free(&msgs[i]);
    }
}

static void tb_stop(ith_daemon *d)
{
    assert_int_equal(ith_stop(d, false), 0);
}

/* ---- routing ----------------------------------------------------------------------------- */

static void t_direct_builtin_echo(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    hsbus_msg m, *reply = NULL;
    tb_msg(&m, "echo", NULL, NULL, "hello echo");
    assert_int_equal(hsbus_request(a, &m, 5000, &reply), HSBUS_OK);
    assert_non_null(reply);
    assert_true(tb_body_is(reply, "hello echo"));
    assert_string_equal(reply->from, "echo");
    assert_true(reply->corr != 0);
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&m);

    hsbus_close(&a);
    tb_stop(&d);
}

/* tb_free_port returns a TCP port on 127.0.0.1 that was free a moment ago. */
static int tb_free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* The tcp listener (nng) and the ipc listener (the daemon's own) serve one bus: an agent on tcp
 * asks the built-in echo, and reaches an agent on ipc, which answers it. */
static void t_tcp_and_ipc(void **state)
{
    (void)state;
    char set[96];
    int port = tb_free_port();
    snprintf(set, sizeof(set), "gateway.listen_tcp=tcp://127.0.0.1:%d", port);
    const char *sets[] = {set, NULL};
    ith_daemon d;
    assert_true(ith_start(&d, sets));
    ith_daemon dt = d;
    snprintf(dt.url, sizeof(dt.url), "tcp://127.0.0.1:%d", port);
    hsbus_client *t = tb_connect(&dt, "on-tcp", NULL, 0, NULL, 0);
    hsbus_client *i = tb_connect(&d, "on-ipc", NULL, 0, NULL, 0);

    hsbus_msg m, *reply = NULL;
    tb_msg(&m, "echo", NULL, NULL, "over tcp");
    assert_int_equal(hsbus_request(t, &m, 5000, &reply), HSBUS_OK);
    assert_true(tb_body_is(reply, "over tcp"));
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&m);

    uint64_t id = 0;
    tb_msg(&m, "on-ipc", NULL, NULL, "tcp to ipc");
    assert_int_equal(tb_send(t, &m, &id), HSBUS_OK);
    hsbus_msg *got = tb_fetch_one(i, 5000);
    assert_int_equal(got->id, id);
    assert_string_equal(got->from, "on-tcp");
    assert_true(tb_body_is(got, "tcp to ipc"));
    assert_int_equal(hsbus_ack(i, got->id), HSBUS_OK);
    hsbus_msg_free(&got);
    hsbus_msg_clear(&m);

    tb_msg(&m, "on-tcp", NULL, NULL, "ipc to tcp");
    assert_int_equal(tb_send(i, &m, &id), HSBUS_OK);
    got = tb_fetch_one(t, 5000);
    assert_int_equal(got->id, id);
    assert_true(tb_body_is(got, "ipc to tcp"));
    assert_int_equal(hsbus_ack(t, got->id), HSBUS_OK);
    hsbus_msg_free(&got);
    hsbus_msg_clear(&m);

    hsbus_close(&i);
    hsbus_close(&t);
    tb_stop(&d);
}

/* What the callbacks of t_request_async saw (they run on the client's completion thread, where
 * cmocka must not assert). */
typedef struct tb_async {
    pthread_mutex_t mtx;
    pthread_cond_t cv;
    int calls, good;
    hsbus_err noroute_err;
    char text[64][16]; /* the body each request carried, by index */
} tb_async;

static tb_async tb_as = {.mtx = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void tb_async_cb(hsbus_client *c, hsbus_err err, hsbus_msg *reply, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;

    (void)c;
    pthread_mutex_lock(&tb_as.mtx);
    if (i == 64) {
        tb_as.noroute_err = err;
    } else if (err == HSBUS_OK && reply != NULL && tb_body_is(reply, tb_as.text[i]) &&
               strcmp(reply->from, "echo") == 0) {
        tb_as.good++;
    }
    tb_as.calls++;
    pthread_cond_broadcast(&tb_as.cv);
    pthread_mutex_unlock(&tb_as.mtx);
    hsbus_msg_free(&reply);
}

/* 64 asynchronous requests in flight at once to the built-in echo agent of a real daemon: each
 * callback gets its own request's reply; one to nobody gets E_NOROUTE through its callback. */
static void t_request_async(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);
    hsbus_msg m;

    for (size_t i = 0; i < 64; i++) {
        snprintf(tb_as.text[i], sizeof(tb_as.text[i]), "async %zu", i);
        tb_msg(&m, "echo", NULL, NULL, tb_as.text[i]);
        assert_int_equal(hsbus_request_async(a, &m, 10000, tb_async_cb, (void *)(uintptr_t)i),
                         HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    tb_msg(&m, "nobody", NULL, NULL, "lost");
    assert_int_equal(hsbus_request_async(a, &m, 10000, tb_async_cb, (void *)(uintptr_t)64),
                     HSBUS_OK);
    hsbus_msg_clear(&m);
    pthread_mutex_lock(&tb_as.mtx);
    while (tb_as.calls < 65) { /* every request has a timeout: each callback comes */
        pthread_cond_wait(&tb_as.cv, &tb_as.mtx);
    }
    pthread_mutex_unlock(&tb_as.mtx);
    assert_int_equal(tb_as.good, 64);
    assert_int_equal(tb_as.noroute_err, HSBUS_ENOROUTE);

    hsbus_close(&a);
    tb_stop(&d);
}

static void t_direct_external(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *w = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    hsbus_msg m;
    uint64_t id = 0;
    tb_msg(&m, "worker", NULL, NULL, "job-1");
    assert_int_equal(tb_send(a, &m, &id), HSBUS_OK);
    assert_true(id != 0);
    hsbus_msg *got = tb_fetch_one(w, 5000);
    assert_int_equal(got->id, id);
    assert_string_equal(got->from, "alice"); /* set by the broker from the session */
    assert_true(tb_body_is(got, "job-1"));
    assert_int_equal(got->deliveries, 1);
    assert_int_equal(hsbus_ack(w, got->id), HSBUS_OK);
    assert_int_equal(hsbus_flush_acks(w), HSBUS_OK);
    hsbus_msg_free(&got);

    /* No such agent: refused at once. */
    hsbus_msg_clear(&m);
    tb_msg(&m, "nobody", NULL, NULL, "x");
    assert_int_equal(tb_send(a, &m, NULL), HSBUS_ENOROUTE);
    hsbus_msg_clear(&m);

    hsbus_close(&a);
    hsbus_close(&w);
    tb_stop(&d);
}

static void t_by_type(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    const char *lab[] = {"lab.*"};
    const char *consent[] = {"consent.check"};
    hsbus_client *l = tb_connect(&d, "lab", lab, 1, NULL, 0);
    hsbus_client *c = tb_connect(&d, "consent", consent, 1, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    hsbus_msg m;
    uint64_t id1, id2;
    tb_msg(&m, NULL, "lab.result", NULL, "r");
    assert_int_equal(tb_send(a, &m, &id1), HSBUS_OK);
    hsbus_msg_clear(&m);
    tb_msg(&m, NULL, "consent.check", NULL, "c");
    assert_int_equal(tb_send(a, &m, &id2), HSBUS_OK);
    hsbus_msg_clear(&m);
    tb_msg(&m, NULL, "unknown.type", NULL, "u");
    assert_int_equal(tb_send(a, &m, NULL), HSBUS_ENOROUTE);
    hsbus_msg_clear(&m);

    hsbus_msg *got = tb_fetch_one(l, 5000);
    assert_int_equal(got->id, id1);
    assert_string_equal(got->type, "lab.result");
    hsbus_ack(l, got->id);
    hsbus_msg_free(&got);
    got = tb_fetch_one(c, 5000);
    assert_int_equal(got->id, id2);
    hsbus_ack(c, got->id);
    hsbus_msg_free(&got);

    hsbus_close(&a);
    hsbus_close(&c);
    hsbus_close(&l);
    tb_stop(&d);
}

static void t_topic_fanout(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    const char *news[] = {"news"};
    hsbus_client *b = tb_connect(&d, "bob", NULL, 0, news, 1);
    hsbus_client *c = tb_connect(&d, "carol", NULL, 0, news, 1);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    hsbus_msg m;
    uint64_t id;
    tb_msg(&m, NULL, NULL, "news", "headline");
    assert_int_equal(tb_send(a, &m, &id), HSBUS_OK);
    hsbus_msg_clear(&m);

    hsbus_msg *gb = tb_fetch_one(b, 5000);
    hsbus_msg *gc = tb_fetch_one(c, 5000);
    assert_int_equal(gb->id, id);
    assert_int_equal(gc->id, id);
    assert_true(tb_body_is(gb, "headline"));
    assert_true(tb_body_is(gc, "headline"));
    hsbus_ack(b, gb->id);
    hsbus_ack(c, gc->id);
    hsbus_msg_free(&gb);
    hsbus_msg_free(&gc);

    hsbus_close(&a);
    hsbus_close(&b);
    hsbus_close(&c);
    tb_stop(&d);
}

/* An external agent that answers requests on its own thread. */
typedef struct tb_replier {
    hsbus_client *c;
    int count;
} tb_replier;

static hsbus_err tb_reply_handler(hsbus_client *c, const hsbus_msg *msg, void *arg)
{
    tb_replier *r = arg;
    /* Count before replying: the requester may see the reply before this handler returns. */
    __atomic_add_fetch(&r->count, 1, __ATOMIC_SEQ_CST);
    const uint8_t *p;
    size_t n;
    hsbus_msg_body_bytes(msg, &p, &n);
    char buf[64];
    int len = snprintf(buf, sizeof(buf), "re:%.*s", (int)n, (const char *)p);
    hsbus_msg tmp;
    hsbus_msg_init(&tmp);
    hsbus_msg_set_body_str(&tmp, buf, (size_t)len);
    hsbus_err err = hsbus_reply(c, msg, tmp.body, tmp.body_len);
    hsbus_msg_clear(&tmp);
    return err;
}

static void t_request_reply_external(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    tb_replier r = {0};
    r.c = tb_connect(&d, "oracle", NULL, 0, NULL, 0);
    assert_int_equal(hsbus_set_handler(r.c, tb_reply_handler, &r), HSBUS_OK);
    assert_int_equal(hsbus_start(r.c, 1), HSBUS_OK);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    for (int i = 0; i < 20; i++) {
        hsbus_msg m, *reply = NULL;
        char body[16], want[20];
        snprintf(body, sizeof(body), "q%d", i);
        snprintf(want, sizeof(want), "re:q%d", i);
        tb_msg(&m, "oracle", NULL, NULL, body);
        assert_int_equal(hsbus_request(a, &m, 5000, &reply), HSBUS_OK);
        assert_true(tb_body_is(reply, want));
        assert_string_equal(reply->from, "oracle");
        hsbus_msg_free(&reply);
        hsbus_msg_clear(&m);
    }
    assert_int_equal(__atomic_load_n(&r.count, __ATOMIC_SEQ_CST), 20);
    hsbus_close(&a);
    hsbus_close(&r.c);
    tb_stop(&d);
}

/* ---- priorities and batching ------------------------------------------------------------- */

static void t_priority_backlog(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *w = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    /* Queue a backlog while the worker is not fetching: routine traffic first. */
    static const struct {
        uint8_t prio;
        int count;
    } plan[] = {{HSBUS_PRIO_LOW, 12},
                {HSBUS_PRIO_NORMAL, 12},
                {HSBUS_PRIO_HIGH, 12},
                {HSBUS_PRIO_CRITICAL, 4}};
    int total = 0;
    for (size_t p = 0; p < 4; p++) {
        for (int i = 0; i < plan[p].count; i++) {
            hsbus_msg m;
            tb_msg(&m, "worker", NULL, NULL, "x");
            m.prio = plan[p].prio;
            assert_int_equal(tb_send(a, &m, NULL), HSBUS_OK);
            hsbus_msg_clear(&m);
            total++;
        }
    }
    uint8_t order[64];
    for (int i = 0; i < total; i++) {
        hsbus_msg *got = tb_fetch_one(w, 5000);
        order[i] = got->prio;
        hsbus_ack(w, got->id);
        hsbus_msg_free(&got);
    }
    /* Critical always first. */
    for (int i = 0; i < 4; i++) {
        assert_int_equal(order[i], HSBUS_PRIO_CRITICAL);
    }
    /* Weighted round robin: a low message is served before the high and normal lanes are empty
     * (low never starves), and high gets more turns than low early on. */
    int first_low = -1, last_normal = -1, high_in_first_14 = 0, low_in_first_14 = 0;
    for (int i = 4; i < total; i++) {
        if (order[i] == HSBUS_PRIO_LOW && first_low < 0) {
            first_low = i;
        }
        if (order[i] == HSBUS_PRIO_NORMAL) {
            last_normal = i;
        }
        if (i < 18) {
            high_in_first_14 += order[i] == HSBUS_PRIO_HIGH;
            low_in_first_14 += order[i] == HSBUS_PRIO_LOW;
        }
    }
    assert_true(first_low >= 0);
    assert_true(first_low < last_normal);
    assert_true(high_in_first_14 > low_in_first_14);
    hsbus_close(&a);
    hsbus_close(&w);
    tb_stop(&d);
}

static void t_batch_delivery(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"bus.batch_max=8", "bus.batch_linger_ms=300", NULL};
    assert_true(ith_start(&d, sets));
    hsbus_client *w = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    /* Eight messages with one batch key reach batch_max: delivered together in one fetch. */
    for (int i = 0; i < 8; i++) {
        hsbus_msg m;
        tb_msg(&m, "worker", NULL, NULL, "b");
        snprintf(m.batch, sizeof(m.batch), "cohort-7");
        assert_int_equal(tb_send(a, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    hsbus_msg *msgs[64];
    size_t n = tb_fetch(w, 64, 5000, msgs);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(msgs[i]->batch, "cohort-7");
        hsbus_ack(w, msgs[i]->id);
    }
    tb_free_all(msgs, n);

    /* Three with another key: held until the linger passes, then delivered together. */
    for (int i = 0; i < 3; i++) {
        hsbus_msg m;
        tb_msg(&m, "worker", NULL, NULL, "j");
        snprintf(m.batch, sizeof(m.batch), "cohort-8");
        assert_int_equal(tb_send(a, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    n = tb_fetch(w, 64, 5000, msgs);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(msgs[i]->batch, "cohort-8");
        hsbus_ack(w, msgs[i]->id);
    }
    tb_free_all(msgs, n);
    hsbus_close(&a);
    hsbus_close(&w);
    tb_stop(&d);
}

/* ---- deadlines, breakers, redelivery, backpressure --------------------------------------- */

/* tb_wait_sys_error fetches from c until a sys.error with corr == id arrives (bounded). */
static bool tb_wait_sys_error(hsbus_client *c, uint64_t id, const char *code)
{
    for (int tries = 0; tries < 50; tries++) {
        hsbus_msg *msgs[16];
        size_t n = tb_fetch(c, 16, 200, msgs);
        bool found = false;
        for (size_t i = 0; i < n; i++) {
            if (strcmp(msgs[i]->type, "sys.error") == 0 && msgs[i]->corr == id) {
                const uint8_t *p;
                size_t len;
                /* The body is a raw msgpack map {err, msg}: look for the code's bytes. */
                p = msgs[i]->body;
                len = msgs[i]->body_len;
                found = memmem(p, len, code, strlen(code)) != NULL;
            }
            hsbus_ack(c, msgs[i]->id);
        }
        tb_free_all(msgs, n);
        if (found) {
            return true;
        }
    }
    return false;
}

static void t_deadline_expiry(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *w = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    hsbus_msg m;
    uint64_t id;
    tb_msg(&m, "worker", NULL, NULL, "too late");
    m.ttl_ms = 100;
    assert_int_equal(tb_send(a, &m, &id), HSBUS_OK);
    hsbus_msg_clear(&m);
    ith_sleep_ms(300); /* let the deadline pass: the worker never fetched */

    assert_true(tb_wait_sys_error(a, id, "E_EXPIRED"));
    hsbus_msg *msgs[4];
    assert_int_equal(tb_fetch(w, 4, 200, msgs), 0); /* never delivered */
    hsbus_close(&a);
    hsbus_close(&w);
    tb_stop(&d);
}

static void t_breaker_builtin_fails_fast(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"agent.echo.fail_pct=100", "agent.echo.breaker_failure_threshold=3",
                          "agent.echo.breaker_recovery_timeout_ms=600000", NULL};
    assert_true(ith_start(&d, sets));
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);

    hsbus_err last = HSBUS_OK;
    for (int i = 0; i < 100 && last != HSBUS_EBREAKER_OPEN; i++) {
        hsbus_msg m;
        tb_msg(&m, "echo", NULL, NULL, "ping");
        last = tb_send(a, &m, NULL);
        hsbus_msg_clear(&m);
        if (last != HSBUS_EBREAKER_OPEN) {
            ith_sleep_ms(20); /* the failing echo needs a moment to nack */
        }
    }
    assert_int_equal(last, HSBUS_EBREAKER_OPEN);
    assert_true(ith_log_contains(&d, "event=breaker"));
    hsbus_close(&a);
    tb_stop(&d);
}

static void t_breaker_half_open_recovers(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"agent.flaky.breaker_failure_threshold=2",
                          "agent.flaky.breaker_recovery_timeout_ms=300",
                          "agent.flaky.max_deliveries=1", NULL};
    assert_true(ith_start(&d, sets));
    const char *sysb[] = {"sys.breaker"};
    hsbus_client *f = tb_connect(&d, "flaky", NULL, 0, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, sysb, 1);

    /* Two failures open the breaker. */
    for (int i = 0; i < 2; i++) {
        hsbus_msg m;
        tb_msg(&m, "flaky", NULL, NULL, "job");
        assert_int_equal(tb_send(a, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
        hsbus_msg *got = tb_fetch_one(f, 5000);
        assert_int_equal(hsbus_nack(f, got->id, "simulated failure"), HSBUS_OK);
        assert_int_equal(hsbus_flush_acks(f), HSBUS_OK);
        hsbus_msg_free(&got);
    }
    hsbus_msg m;
    hsbus_err err = HSBUS_OK;
    for (int i = 0; i < 50 && err != HSBUS_EBREAKER_OPEN; i++) {
        tb_msg(&m, "flaky", NULL, NULL, "job");
        err = tb_send(a, &m, NULL);
        hsbus_msg_clear(&m);
        if (err == HSBUS_OK) { /* the nack had not landed yet: settle this one too */
            hsbus_msg *got = tb_fetch_one(f, 5000);
            hsbus_nack(f, got->id, "simulated failure");
            hsbus_flush_acks(f);
            hsbus_msg_free(&got);
        }
    }
    assert_int_equal(err, HSBUS_EBREAKER_OPEN);

    /* After the recovery timeout a probe goes through; its success closes the breaker. */
    uint64_t probe = 0;
    err = HSBUS_EBREAKER_OPEN;
    for (int i = 0; i < 100 && err == HSBUS_EBREAKER_OPEN; i++) {
        ith_sleep_ms(50);
        tb_msg(&m, "flaky", NULL, NULL, "probe");
        err = tb_send(a, &m, &probe);
        hsbus_msg_clear(&m);
    }
    assert_int_equal(err, HSBUS_OK);
    hsbus_msg *got = tb_fetch_one(f, 5000);
    assert_int_equal(got->id, probe);
    hsbus_ack(f, got->id);
    assert_int_equal(hsbus_flush_acks(f), HSBUS_OK);
    hsbus_msg_free(&got);

    err = HSBUS_EBREAKER_OPEN;
    for (int i = 0; i < 100 && err != HSBUS_OK; i++) {
        tb_msg(&m, "flaky", NULL, NULL, "after");
        err = tb_send(a, &m, NULL);
        hsbus_msg_clear(&m);
        if (err != HSBUS_OK) {
            ith_sleep_ms(20);
        }
    }
    assert_int_equal(err, HSBUS_OK);

    /* The transitions were published on sys.breaker. */
    hsbus_msg *msgs[16];
    size_t n = tb_fetch(a, 16, 2000, msgs);
    size_t breaker_events = 0;
    for (size_t i = 0; i < n; i++) {
        breaker_events += strcmp(msgs[i]->topic, "sys.breaker") == 0;
        hsbus_ack(a, msgs[i]->id);
    }
    tb_free_all(msgs, n);
    assert_true(breaker_events >= 1);
    hsbus_close(&a);
    hsbus_close(&f);
    tb_stop(&d);
}

static void t_redelivery_after_client_dies(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);
    hsbus_msg m;
    uint64_t id;
    tb_msg(&m, "worker", NULL, NULL, "precious");
    /* A worker in another process fetches the message and dies holding it. nng is not safe
     * across fork, so the child execs this binary in its "fetch and die" role. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl(tb_self, tb_self, "--fetch-and-die", d.url, (char *)NULL);
        _exit(127);
    }
    /* Wait until the worker is attached, then send. */
    hsbus_err err = HSBUS_ENOROUTE;
    for (int i = 0; i < 200 && err == HSBUS_ENOROUTE; i++) {
        err = tb_send(a, &m, &id);
        if (err == HSBUS_ENOROUTE) {
            ith_sleep_ms(25);
        }
    }
    assert_int_equal(err, HSBUS_OK);
    hsbus_msg_clear(&m);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    hsbus_client *w2 = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    hsbus_msg *got = tb_fetch_one(w2, 10000);
    assert_int_equal(got->id, id);
    assert_int_equal(got->deliveries, 2);
    assert_true(tb_body_is(got, "precious"));
    hsbus_ack(w2, got->id);
    hsbus_flush_acks(w2);
    hsbus_msg_free(&got);
    hsbus_close(&w2);
    hsbus_close(&a);
    tb_stop(&d);
}

static void t_busy_when_queue_full(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"agent.worker.queue_max_msgs=5", NULL};
    assert_true(ith_start(&d, sets));
    hsbus_client *w = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);
    for (int i = 0; i < 5; i++) {
        hsbus_msg m;
        tb_msg(&m, "worker", NULL, NULL, "fill");
        assert_int_equal(tb_send(a, &m, NULL), HSBUS_OK);
        hsbus_msg_clear(&m);
    }
    hsbus_msg m;
    tb_msg(&m, "worker", NULL, NULL, "one too many");
    assert_int_equal(tb_send(a, &m, NULL), HSBUS_EBUSY);
    hsbus_msg_clear(&m);
    /* Nothing was dropped: the five are all there. */
    hsbus_msg *msgs[16];
    size_t got = 0;
    for (int tries = 0; tries < 20 && got < 5; tries++) {
        size_t n = tb_fetch(w, 16, 500, msgs);
        for (size_t i = 0; i < n; i++) {
            hsbus_ack(w, msgs[i]->id);
        }
        tb_free_all(msgs, n);
        got += n;
    }
    assert_int_equal(got, 5);
    hsbus_close(&a);
    hsbus_close(&w);
    tb_stop(&d);
}

/* ---- bad input --------------------------------------------------------------------------- */

/* tb_raw_call sends buf on a raw REQ socket and decodes the reply as the answer to op. */
static hsb_err tb_raw_call(nng_socket s, hsb_op op, const void *buf, size_t len, hsb_err *werr)
{
    int rv = nng_send(s, (void *)buf, len, 0);
    if (rv != 0) {
        return HSB_EIO;
    }
    char *rep = NULL;
    size_t rlen = 0;
    rv = nng_recv(s, &rep, &rlen, NNG_FLAG_ALLOC);
    if (rv != 0) {
        return HSB_EIO;
    }
    hsb_dec dec;
    hsb_dec_init(&dec);
    hsb_reply r;
    hsb_err err = hsb_dec_reply(&dec, op, rep, rlen, &r);
    *werr = err == HSB_OK ? (r.ok ? HSB_OK : r.err) : err;
    hsb_dec_fini(&dec);
    nng_free(rep, rlen);
    return err;
}

static void t_malformed_and_oversized(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"gateway.max_body=1024", NULL};
    assert_true(ith_start(&d, sets));

    nng_socket s;
    assert_int_equal(nng_req0_open(&s), 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 10000);
    assert_int_equal(nng_dial(s, d.url, NULL, 0), 0);

    /* Not msgpack at all. */
    hsb_err werr;
    static const uint8_t junk[] = {0xc1, 0xff, 0x00, 0x13};
    assert_int_equal(tb_raw_call(s, HSB_OP_SEND, junk, sizeof(junk), &werr), HSB_OK);
    assert_int_equal(werr, HSB_EBADMSG);

    /* A request before hello. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    hsb_request req;
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_FETCH;
    req.u.fetch.max = 1;
    assert_int_equal(hsb_enc_request(&pk, &req), HSB_OK);
    assert_int_equal(tb_raw_call(s, HSB_OP_FETCH, sb.data, sb.size, &werr), HSB_OK);
    assert_int_equal(werr, HSB_EAUTH);

    /* hello, then a send whose body is over the limit: E_TOOBIG. */
    msgpack_sbuffer_clear(&sb);
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_HELLO;
    req.u.hello.v = 1;
    snprintf(req.u.hello.agent, sizeof(req.u.hello.agent), "raw");
    assert_int_equal(hsb_enc_request(&pk, &req), HSB_OK);
    assert_int_equal(tb_raw_call(s, HSB_OP_HELLO, sb.data, sb.size, &werr), HSB_OK);
    assert_int_equal(werr, HSB_OK);

    msgpack_sbuffer_clear(&sb);
    static uint8_t big[2048 + 3];
    big[0] = 0xc5; /* bin16 of 2048 bytes */
    big[1] = 0x08;
    big[2] = 0x00;
    hsb_envelope env;
    hsb_envelope_init(&env);
    snprintf(env.to, sizeof(env.to), "echo");
    env.body = big;
    env.body_len = sizeof(big);
    memset(&req, 0, sizeof(req));
    req.op = HSB_OP_SEND;
    req.u.send.msgs = &env;
    req.u.send.n_msgs = 1;
    assert_int_equal(hsb_enc_request(&pk, &req), HSB_OK);
    assert_int_equal(tb_raw_call(s, HSB_OP_SEND, sb.data, sb.size, &werr), HSB_OK);
    assert_int_equal(werr, HSB_ETOOBIG);

    /* A bad priority. */
    msgpack_sbuffer_clear(&sb);
    env.body = NULL;
    env.body_len = 0;
    env.prio = 9;
    assert_int_equal(hsb_enc_request(&pk, &req), HSB_OK);
    assert_int_equal(tb_raw_call(s, HSB_OP_SEND, sb.data, sb.size, &werr), HSB_OK);
    assert_int_equal(hsb_err_wire(werr), hsb_err_wire(HSB_EBADMSG));
    msgpack_sbuffer_destroy(&sb);
    nng_close(s);

    /* The daemon still serves everyone else. */
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);
    hsbus_msg m, *reply = NULL;
    tb_msg(&m, "echo", NULL, NULL, "still here");
    assert_int_equal(hsbus_request(a, &m, 5000, &reply), HSBUS_OK);
    assert_true(tb_body_is(reply, "still here"));
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&m);
    hsbus_close(&a);
    tb_stop(&d);
}

static void t_bad_token_refused(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"agent.custodian.token=s3cret", NULL};
    assert_true(ith_start(&d, sets));
    hsbus_opts o = {.agent = "custodian", .token = "wrong", .timeout_ms = 5000};
    hsbus_client *c = NULL;
    assert_int_equal(hsbus_connect(d.url, &o, &c), HSBUS_EAUTH);
    assert_null(c);
    o.token = "s3cret";
    assert_int_equal(hsbus_connect(d.url, &o, &c), HSBUS_OK);
    hsbus_close(&c);
    tb_stop(&d);
}

static void t_drain_answers_parked_fetch(void **state)
{
    (void)state;
    ith_daemon d;
    assert_true(ith_start(&d, NULL));
    hsbus_client *w = tb_connect(&d, "worker", NULL, 0, NULL, 0);
    pid_t pid = d.pid;
    /* Ask the daemon to drain in one second while a fetch is parked for ten. */
    pid_t killer = fork();
    if (killer == 0) {
        ith_sleep_ms(1000);
        kill(pid, SIGTERM);
        _exit(0);
    }
    hsbus_msg *msgs[4];
    size_t n = 99;
    hsbus_err err = hsbus_fetch(w, 4, 10000, msgs, &n);
    /* Answered by the daemon (empty, or E_SHUTDOWN), not cut off by its exit: a closed
     * connection (HSBUS_ECLOSED, HSBUS_EIO) would mean the parked fetch was dropped. */
    if (err != HSBUS_OK) {
        fprintf(stderr, "fetch during drain: %s (%s)\n", hsbus_err_name(err), hsbus_errmsg(w));
    }
    assert_true((err == HSBUS_OK && n == 0) || err == HSBUS_ESHUTDOWN);
    waitpid(killer, NULL, 0);
    assert_int_equal(ith_stop(&d, false), 0);
    hsbus_close(&w);
}

static void t_plugin_agent(void **state)
{
    (void)state;
    ith_daemon d;
    char set[600];
    const char *plugin = getenv("HSB_TEST_PLUGIN");
    assert_non_null(plugin);
    snprintf(set, sizeof(set), "agent.upper.plugin=%s", plugin);
    const char *sets[] = {set, NULL};
    assert_true(ith_start(&d, sets));
    assert_true(ith_log_contains(&d, "event=agent_started agent=upper"));
    hsbus_client *a = tb_connect(&d, "alice", NULL, 0, NULL, 0);
    hsbus_msg m, *reply = NULL;
    tb_msg(&m, NULL, "text.upper", NULL, "consent granted");
    assert_int_equal(hsbus_request(a, &m, 5000, &reply), HSBUS_OK);
    assert_true(tb_body_is(reply, "CONSENT GRANTED"));
    assert_string_equal(reply->from, "upper");
    hsbus_msg_free(&reply);
    hsbus_msg_clear(&m);
    hsbus_close(&a);
    tb_stop(&d);
}

static void t_bad_plugin_refuses_start(void **state)
{
    (void)state;
    ith_daemon d;
    const char *sets[] = {"agent.ghost.plugin=/nonexistent/ghost.so", NULL};
    assert_false(ith_start(&d, sets));
    assert_true(ith_log_contains(&d, "event=plugin_failed agent=ghost"));
    assert_int_equal(ith_stop(&d, false), -1); /* it had already exited */
}

int main(int argc, char **argv)
{
    tb_self = argv[0];
    if (argc == 3 && strcmp(argv[1], "--fetch-and-die") == 0) {
        return tb_fetch_and_die(argv[2]);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_direct_builtin_echo),
        cmocka_unit_test(t_direct_external),
        cmocka_unit_test(t_tcp_and_ipc),
        cmocka_unit_test(t_request_async),
        cmocka_unit_test(t_by_type),
        cmocka_unit_test(t_topic_fanout),
        cmocka_unit_test(t_request_reply_external),
        cmocka_unit_test(t_priority_backlog),
        cmocka_unit_test(t_batch_delivery),
        cmocka_unit_test(t_deadline_expiry),
        cmocka_unit_test(t_breaker_builtin_fails_fast),
        cmocka_unit_test(t_breaker_half_open_recovers),
        cmocka_unit_test(t_redelivery_after_client_dies),
        cmocka_unit_test(t_busy_when_queue_full),
        cmocka_unit_test(t_malformed_and_oversized),
        cmocka_unit_test(t_bad_token_refused),
        cmocka_unit_test(t_drain_answers_parked_fetch),
        cmocka_unit_test(t_plugin_agent),
        cmocka_unit_test(t_bad_plugin_refuses_start),
    };
    signal(SIGPIPE, SIG_IGN);
    const char *filter = getenv("HSB_TEST_FILTER");
    if (filter != NULL) {
        cmocka_set_test_filter(filter);
    }
    return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
