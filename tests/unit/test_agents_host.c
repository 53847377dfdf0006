/*
 * tests/unit/test_agents_host.c - agents/host.c with the real echo agent and a fake daemon (the
 * services): a pushed batch comes back with its results and the agent's replies in the outbox;
 * options reach the agent; a bad option fails start-up; sends outside handle_batch feel the
 * inbox bound; a stopped host refuses pushes.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agents/host.h"

typedef struct th_fake {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    agent_batch *got[16];
    int n_got;
    const char *fail_pct; /* the echo agent's option, or NULL */
    bool inbox_full;      /* bounded posts answer HSB_EBUSY */
} th_fake;

static hsb_err th_post(void *arg, agent_batch *b, bool bounded)
{
    th_fake *f = arg;
    if (bounded && f->inbox_full) {
        return HSB_EBUSY;
    }
    pthread_mutex_lock(&f->lock);
    f->got[f->n_got++] = b;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
    return HSB_OK;
}

static const char *th_option(void *arg, const char *agent, const char *key)
{
    th_fake *f = arg;
    (void)agent;
    return strcmp(key, "fail_pct") == 0 ? f->fail_pct : NULL;
}

static agent_batch *th_wait(th_fake *f, int n)
{
    pthread_mutex_lock(&f->lock);
    while (f->n_got < n) {
        pthread_cond_wait(&f->cond, &f->lock);
    }
    agent_batch *b = f->got[n - 1];
    pthread_mutex_unlock(&f->lock);
    return b;
}

static agent_host *th_start(th_fake *f, hsb_err *err)
{
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    agent_host_services svc = {.arg = f, .post = th_post, .option = th_option};
    bool (*known)(const char *) = NULL;
    const hsb_agent_ops *ops = agent_builtin_find("echo", &known);
    assert_non_null(ops);
    assert_true(known("fail_pct"));
    assert_false(known("fail_rate"));
    agent_host *h = NULL;
    *err = agent_host_start(ops, "echo", 2, &svc, &h);
    return h;
}

static bus_msg *th_msg(uint64_t id, const char *from, const char *body)
{
    /* body: a msgpack fixstr */
    uint8_t buf[32];
    size_t n = strlen(body);
    buf[0] = (uint8_t)(0xa0 | n);
    memcpy(buf + 1, body, n);
    hsb_envelope env;
    hsb_envelope_init(&env);
    env.id = id;
    snprintf(env.from, sizeof(env.from), "%s", from);
    snprintf(env.to, sizeof(env.to), "echo");
    env.body = buf;
    env.body_len = n + 1;
    return bus_msg_new(&env);
}

static void test_batch_round_trip_with_replies(void **state)
{
    (void)state;
    static th_fake f;
    memset(&f, 0, sizeof(f));
    hsb_err err;
    agent_host *h = th_start(&f, &err);
    assert_int_equal(err, HSB_OK);

    bus_delivery d[3];
    for (int i = 0; i < 3; i++) {
        d[i].msg = th_msg(100 + (uint64_t)i, "alice", "hi");
        d[i].deliveries = 1;
    }
    assert_int_equal(agent_host_push(h, d, 3), HSB_OK);
    agent_batch *b = th_wait(&f, 1);
    assert_int_equal(b->n, 3);
    assert_int_equal(b->n_out, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b->results[i], HSB_OK);
        const hsb_envelope *r = &b->outbox[i]->env;
        assert_int_equal(r->corr, 100 + (uint64_t)i); /* a reply to that message */
        assert_string_equal(r->from, "echo");         /* the host sets the sender */
        assert_int_equal(r->id, 0);                   /* the broker will set it */
        assert_int_equal(r->body_len, 3);
        assert_memory_equal(r->body, "\xa2hi", 3);
    }
    agent_batch_free(b);
    agent_host_stop(h);
    /* Stopped: a push is refused and the caller keeps its references. */
    bus_msg *m = th_msg(200, "alice", "x");
    bus_delivery one = {m, 1};
    assert_int_equal(agent_host_push(h, &one, 1), HSB_ESHUTDOWN);
    bus_msg_unref(m);
    agent_host_free(h);
}

static void test_fail_pct_nacks_everything(void **state)
{
    (void)state;
    static th_fake f;
    memset(&f, 0, sizeof(f));
    f.fail_pct = "100";
    hsb_err err;
    agent_host *h = th_start(&f, &err);
    assert_int_equal(err, HSB_OK);
    bus_delivery d[2] = {{th_msg(1, "a", "x"), 1}, {th_msg(2, "a", "y"), 1}};
    assert_int_equal(agent_host_push(h, d, 2), HSB_OK);
    agent_batch *b = th_wait(&f, 1);
    assert_int_not_equal(b->results[0], HSB_OK);
    assert_int_not_equal(b->results[1], HSB_OK);
    assert_int_equal(b->n_out, 0);
    agent_batch_free(b);
    agent_host_stop(h);
    agent_host_free(h);
}

static void test_bad_option_fails_start(void **state)
{
    (void)state;
    static th_fake f;
    memset(&f, 0, sizeof(f));
    f.fail_pct = "150"; /* out of 0..100 */
    hsb_err err;
    agent_host *h = th_start(&f, &err);
    assert_int_equal(err, HSB_EINVAL);
    assert_null(h);
}

static void test_send_outside_batch_is_bounded(void **state)
{
    (void)state;
    static th_fake f;
    memset(&f, 0, sizeof(f));
    hsb_err err;
    agent_host *h = th_start(&f, &err);
    assert_int_equal(err, HSB_OK);
    /* The test acts as a thread of the agent's own, outside handle_batch. */
    hsb_agent_env *env = agent_host_env(h);
    hsb_envelope e;
    hsb_envelope_init(&e);
    snprintf(e.topic, sizeof(e.topic), "news");
    f.inbox_full = true;
    assert_int_equal(env->send(env, &e), HSB_EBUSY);
    f.inbox_full = false;
    assert_int_equal(env->send(env, &e), HSB_OK);
    agent_batch *b = th_wait(&f, 1);
    assert_int_equal(b->n, 0);
    assert_int_equal(b->n_out, 1);
    assert_string_equal(b->outbox[0]->env.topic, "news");
    assert_string_equal(b->outbox[0]->env.from, "echo");
    agent_batch_free(b);
    assert_int_equal(env->publish(env, "Bad Topic", NULL, 0), HSB_EBADNAME);
    agent_host_stop(h);
    agent_host_free(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_round_trip_with_replies),
        cmocka_unit_test(test_fail_pct_nacks_everything),
        cmocka_unit_test(test_bad_option_fails_start),
        cmocka_unit_test(test_send_outside_batch_is_bounded),
    };
    return cmocka_run_group_tests_name("agents_host", tests, NULL, NULL);
}
