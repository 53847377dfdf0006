/*
 * Unit tests for the bus as a whole (bus/bus.c), through bus.h only: a fake clock, a fake host
 * that records every callback, and a fake store. No sockets, no threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <msgpack.h>

#include "bus/bus.h"

#define T0 1700000000000ULL

/* ---- fakes ------------------------------------------------------------------------------- */

typedef struct got {
    bus_client *c;
    void *cookie;
    size_t call; /* which deliver call */
    const bus_msg *msg;
    uint64_t id, corr;
    uint32_t deliveries;
    uint8_t prio;
    char from[HSB_NAME_MAX + 1];
    char type[HSB_NAME_MAX + 1];
    char err[32];                  /* sys.error body's err */
    char bto[32];                  /* sys.breaker body's to */
    char bagent[HSB_NAME_MAX + 1]; /* sys.breaker body's agent */
} got;

typedef struct ev_rec {
    char event[32];
    char agent[HSB_NAME_MAX + 1];
    bus_breaker_state from, to;
    char detail[160];
} ev_rec;

typedef struct fake {
    uint64_t now;
    bus *b;
    got got[512];
    size_t n_got;
    size_t calls;       /* deliver calls with n > 0 */
    size_t empty_calls; /* deliver calls with n == 0 */
    void *empty_cookie;
    void *done[16];
    size_t n_done;
    ev_rec ev[64];
    size_t n_ev;
    bool auto_ack; /* ack inside deliver, as a built-in agent's host might (re-entry) */
    bool refetch;  /* park a new fetch from inside an empty answer (re-entry) */
    /* store */
    size_t saves, removes, delivered_calls, dead, audits;
    uint64_t last_save_token, last_removed;
    char dead_reason[64];
    char dead_agent[HSB_NAME_MAX + 1];
    uint32_t dead_deliveries;
    hsb_err save_result;
} fake;

static uint64_t fake_clock(void *arg)
{
    return ((fake *)arg)->now;
}

/* Copies the string value of key from m's body (a msgpack map) into out, or "". */
static void body_str(const bus_msg *m, const char *key, char *out, size_t len)
{
    out[0] = '\0';
    if (m->env.body == NULL) {
        return;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    if (msgpack_unpack_next(&u, (const char *)m->env.body, m->env.body_len, NULL) ==
            MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            msgpack_object_kv *kv = &u.data.via.map.ptr[i];
            if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
                memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0 &&
                kv->val.type == MSGPACK_OBJECT_STR) {
                snprintf(out, len, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
            }
        }
    }
    msgpack_unpacked_destroy(&u);
}

static void fake_deliver(void *host, bus_client *c, void *cookie, const bus_delivery *d, size_t n)
{
    fake *f = host;
    if (n == 0) {
        f->empty_calls++;
        f->empty_cookie = cookie;
        if (f->refetch) {
            hsb_fetch_req req;
            memset(&req, 0, sizeof(req));
            req.max = 1;
            assert_int_equal(bus_fetch(f->b, c, &req, cookie), HSB_OK);
        }
        return;
    }
    f->calls++;
    for (size_t i = 0; i < n; i++) {
        assert_true(f->n_got < 512);
        /* Invariants for every delivery in every test: never expired, counted from 1. */
        assert_true(d[i].msg->env.deadline > (int64_t)f->now);
        assert_true(d[i].deliveries >= 1);
        got *g = &f->got[f->n_got++];
        g->c = c;
        g->cookie = cookie;
        g->call = f->calls;
        g->msg = d[i].msg;
        g->id = d[i].msg->env.id;
        g->corr = d[i].msg->env.corr;
        g->deliveries = d[i].deliveries;
        g->prio = d[i].msg->env.prio;
        snprintf(g->from, sizeof(g->from), "%s", d[i].msg->env.from);
        snprintf(g->type, sizeof(g->type), "%s", d[i].msg->env.type);
        body_str(d[i].msg, "err", g->err, sizeof(g->err));
        body_str(d[i].msg, "to", g->bto, sizeof(g->bto));
        body_str(d[i].msg, "agent", g->bagent, sizeof(g->bagent));
        uint64_t id = d[i].msg->env.id;
        bus_msg_unref(d[i].msg);
        if (f->auto_ack) {
            bus_ack(f->b, c, id);
        }
    }
}

static void fake_send_done(void *host, void *cookie)
{
    fake *f = host;
    if (f->n_done < 16) {
        f->done[f->n_done++] = cookie;
    }
}

static void fake_event(void *host, const bus_event *ev)
{
    fake *f = host;
    if (f->n_ev == 64) {
        return;
    }
    ev_rec *r = &f->ev[f->n_ev++];
    snprintf(r->event, sizeof(r->event), "%s", ev->event);
    snprintf(r->agent, sizeof(r->agent), "%s", ev->agent != NULL ? ev->agent : "");
    r->from = ev->from;
    r->to = ev->to;
    snprintf(r->detail, sizeof(r->detail), "%s", ev->detail != NULL ? ev->detail : "");
}

static hsb_err fake_save(void *ctx, const bus_msg *m, uint64_t token)
{
    fake *f = ctx;
    f->saves++;
    f->last_save_token = token;
    assert_true(m->env.durable);
    return f->save_result;
}

static void fake_remove(void *ctx, uint64_t id)
{
    fake *f = ctx;
    f->removes++;
    f->last_removed = id;
}

static void fake_delivered(void *ctx, uint64_t id, uint32_t deliveries)
{
    (void)id;
    (void)deliveries;
    ((fake *)ctx)->delivered_calls++;
}

static void fake_dead_letter(void *ctx, const bus_msg *m, const char *agent, uint32_t deliveries,
                             const char *reason)
{
    (void)m;
    fake *f = ctx;
    f->dead++;
    snprintf(f->dead_reason, sizeof(f->dead_reason), "%s", reason);
    snprintf(f->dead_agent, sizeof(f->dead_agent), "%s", agent);
    f->dead_deliveries = deliveries;
}

static void fake_audit(void *ctx, const char *event, const char *detail)
{
    (void)event;
    (void)detail;
    ((fake *)ctx)->audits++;
}

static const bus_host_ops host_ops = {fake_deliver, fake_send_done, fake_event};
static const bus_persist_ops persist_ops = {fake_save, fake_remove, fake_delivered,
                                            fake_dead_letter, fake_audit};

static fake *F;

static bus_config test_config(void)
{
    bus_config cfg;
    bus_config_defaults(&cfg);
    cfg.clock_ms = fake_clock;
    cfg.clock_arg = F;
    cfg.batch_linger_ms = 5;
    cfg.agent_defaults.breaker.failure_threshold = 3;
    cfg.agent_defaults.breaker.recovery_timeout_ms = 1000;
    return cfg;
}

static int setup(void **state)
{
    F = calloc(1, sizeof(*F));
    F->now = T0;
    bus_config cfg = test_config();
    assert_int_equal(bus_new(&cfg, &host_ops, F, &F->b), HSB_OK);
    *state = F;
    return 0;
}

static int teardown(void **state)
{
    fake *f = *state;
    bus_free(f->b);
    free(f);
    return 0;
}

static void with_persist(void)
{
    bus_set_persist(F->b, &persist_ops, F);
}

/* ---- helpers ----------------------------------------------------------------------------- */

static bus_client *attach(const char *agent, const char *handles, const char *subscribes,
                          bus_client_kind kind, uint32_t mailbox)
{
    hsb_hello h;
    memset(&h, 0, sizeof(h));
    h.v = 1;
    snprintf(h.agent, sizeof(h.agent), "%s", agent);
    hsb_name hn[1], sn[1];
    if (handles != NULL) {
        snprintf(hn[0].s, sizeof(hn[0].s), "%s", handles);
        h.handles = hn;
        h.n_handles = 1;
    }
    if (subscribes != NULL) {
        snprintf(sn[0].s, sizeof(sn[0].s), "%s", subscribes);
        h.subscribes = sn;
        h.n_subscribes = 1;
    }
    bus_client *c = NULL;
    assert_int_equal(bus_attach(F->b, &h, kind, mailbox, NULL, &c), HSB_OK);
    return c;
}

static bus_client *ext(const char *agent)
{
    return attach(agent, NULL, NULL, BUS_CLIENT_EXTERNAL, 0);
}

static hsb_envelope env_to(const char *to, uint8_t prio)
{
    hsb_envelope e;
    hsb_envelope_init(&e);
    snprintf(e.to, sizeof(e.to), "%s", to);
    e.prio = prio;
    return e;
}

static hsb_send_result send1(bus_client *from, const hsb_envelope *e)
{
    hsb_send_result r;
    memset(&r, 0, sizeof(r));
    bool pending = true;
    size_t calls = F->calls, done = F->n_done, evs = F->n_ev;
    assert_int_equal(bus_send(F->b, from, e, 1, &r, NULL, &pending), HSB_OK);
    assert_false(pending);
    /* Never a callback from inside bus_send. */
    assert_int_equal(F->calls, calls);
    assert_int_equal(F->n_done, done);
    assert_int_equal(F->n_ev, evs);
    return r;
}

static uint64_t send_ok(bus_client *from, const hsb_envelope *e)
{
    hsb_send_result r = send1(from, e);
    assert_int_equal(r.err, HSB_OK);
    assert_true(r.id != 0);
    return r.id;
}

static void fetch(bus_client *c, uint32_t max, uint32_t wait_ms, void *cookie)
{
    hsb_fetch_req req;
    memset(&req, 0, sizeof(req));
    req.max = max;
    req.wait_ms = wait_ms;
    size_t calls = F->calls;
    assert_int_equal(bus_fetch(F->b, c, &req, cookie), HSB_OK);
    assert_int_equal(F->calls, calls); /* never a callback from inside bus_fetch */
}

static void tick(uint64_t ms)
{
    F->now += ms;
    bus_run_timers(F->b);
    bus_flush(F->b);
}

static bus_agent_stats stats(const char *agent)
{
    bus_agent_stats st;
    assert_int_equal(bus_agent_stats_get(F->b, agent, &st), HSB_OK);
    return st;
}

static size_t count_got(bus_client *c)
{
    size_t n = 0;
    for (size_t i = 0; i < F->n_got; i++) {
        n += F->got[i].c == c;
    }
    return n;
}

static size_t count_events(const char *event)
{
    size_t n = 0;
    for (size_t i = 0; i < F->n_ev; i++) {
        n += strcmp(F->ev[i].event, event) == 0;
    }
    return n;
}

/* ---- routing ----------------------------------------------------------------------------- */

static void test_route_by_name(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *e = ext("echo");
    hsb_envelope m = env_to("echo", HSB_PRIO_NORMAL);
    strcpy(m.from, "forged"); /* ignored */
    uint64_t id = send_ok(p, &m);
    fetch(e, 10, 0, (void *)1);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 1);
    assert_ptr_equal(F->got[0].c, e);
    assert_ptr_equal(F->got[0].cookie, (void *)1);
    assert_int_equal(F->got[0].id, id);
    assert_int_equal(F->got[0].deliveries, 1);
    assert_string_equal(F->got[0].from, "portal");
    assert_string_equal(bus_client_agent(e), "echo");
    assert_true(bus_client_session(e) != bus_client_session(p));
}

static void test_send_msgs_routes_the_callers_message(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *e = ext("echo");
    hsb_envelope env = env_to("echo", HSB_PRIO_HIGH);
    strcpy(env.from, "forged"); /* ignored: the session decides */
    bus_msg *m = bus_msg_new(&env);
    assert_non_null(m);
    hsb_send_result r;
    bool pending = true;
    assert_int_equal(bus_send_msgs(F->b, p, &m, 1, &r, NULL, &pending), HSB_OK);
    assert_false(pending);
    assert_int_equal(r.err, HSB_OK);
    assert_int_equal(m->env.id, r.id); /* routed as it is, not copied */
    assert_string_equal(m->env.from, "portal");
    assert_int_equal(atomic_load(&m->refs), 2); /* the caller's and the queue's */
    bus_msg_unref(m);                           /* the caller is done with it */
    fetch(e, 10, 0, (void *)1);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 1);
    assert_ptr_equal(F->got[0].msg, m); /* the same object reached the agent */
    assert_int_equal(F->got[0].id, r.id);
    assert_string_equal(F->got[0].from, "portal");

    /* A refused message is left to the caller, reference untouched. */
    hsb_envelope bad = env_to("nobody", HSB_PRIO_NORMAL);
    bus_msg *n = bus_msg_new(&bad);
    assert_non_null(n);
    assert_int_equal(bus_send_msgs(F->b, p, &n, 1, &r, NULL, &pending), HSB_OK);
    assert_int_equal(r.err, HSB_ENOROUTE);
    assert_int_equal(atomic_load(&n->refs), 1);
    assert_int_equal(n->env.id, 0);
    bus_msg_unref(n);
}

static void test_route_by_type_exact_and_prefix(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *lab = attach("lab", "lab.*", NULL, BUS_CLIENT_EXTERNAL, 0);
    bus_client *fin = attach("final", "lab.result", NULL, BUS_CLIENT_EXTERNAL, 0);
    hsb_envelope m;
    hsb_envelope_init(&m);
    strcpy(m.type, "lab.result");
    send_ok(p, &m);
    strcpy(m.type, "lab.order");
    send_ok(p, &m);
    fetch(lab, 10, 0, NULL);
    fetch(fin, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(fin), 1);
    assert_int_equal(count_got(lab), 1);
    for (size_t i = 0; i < F->n_got; i++) {
        assert_string_equal(F->got[i].type, F->got[i].c == fin ? "lab.result" : "lab.order");
    }
}

static void test_route_topic_fanout_shares_message(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *s1 = attach("audit", NULL, "consent.changed", BUS_CLIENT_PUSH, 8);
    bus_client *s2 = attach("reasoning", NULL, "consent.changed", BUS_CLIENT_PUSH, 8);
    hsb_envelope m;
    hsb_envelope_init(&m);
    strcpy(m.topic, "consent.changed");
    uint64_t id = send_ok(p, &m);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 2);
    assert_int_equal(count_got(s1), 1);
    assert_int_equal(count_got(s2), 1);
    assert_int_equal(F->got[0].id, id);
    assert_int_equal(F->got[1].id, id);
    assert_ptr_equal(F->got[0].msg, F->got[1].msg); /* one refcounted message, not copies */
    assert_int_equal(stats("audit").received, 1);
    assert_int_equal(stats("reasoning").received, 1);
}

static void test_route_no_route(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    hsb_envelope m = env_to("nobody", HSB_PRIO_NORMAL);
    hsb_send_result r = send1(p, &m);
    assert_int_equal(r.err, HSB_ENOROUTE);
    assert_non_null(r.msg);
    hsb_envelope_init(&m);
    strcpy(m.type, "unknown.type");
    assert_int_equal(send1(p, &m).err, HSB_ENOROUTE);
    hsb_envelope_init(&m);
    strcpy(m.topic, "unheard");
    assert_int_equal(send1(p, &m).err, HSB_ENOROUTE);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.no_route, 3);
    assert_int_equal(t.routed, 0);
}

static void test_route_reply_to_exact_instance(void **state)
{
    (void)state;
    bus_client *p1 = ext("portal");
    bus_client *p2 = ext("portal");
    bus_client *e = ext("echo");
    hsb_envelope m = env_to("echo", HSB_PRIO_NORMAL);
    uint64_t req_id = send_ok(p1, &m);
    fetch(e, 1, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 1);
    /* The reply: corr set, no `to`. p2 offers more credit, but the reply belongs to p1. */
    hsb_envelope r;
    hsb_envelope_init(&r);
    r.corr = req_id;
    uint64_t rep_id = send_ok(e, &r);
    fetch(p2, 50, 0, (void *)2);
    fetch(p1, 1, 0, (void *)1);
    bus_flush(F->b);
    assert_int_equal(count_got(p1), 1);
    assert_int_equal(count_got(p2), 0);
    assert_int_equal(F->got[1].id, rep_id);
    assert_int_equal(F->got[1].corr, req_id);
}

static void test_route_instances_share_load(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w1 = ext("worker");
    bus_client *w2 = ext("worker");
    bus_client *w3 = ext("worker");
    for (int i = 0; i < 6; i++) {
        hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
        send_ok(p, &m);
    }
    /* w2 offers the most credit and is served first; then the others share the rest. */
    fetch(w1, 2, 0, NULL);
    fetch(w2, 3, 0, NULL);
    fetch(w3, 1, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(w2), 3);
    assert_int_equal(count_got(w1), 2);
    assert_int_equal(count_got(w3), 1);
    assert_ptr_equal(F->got[0].c, w2);
    /* Equal credit: round robin. */
    for (int i = 0; i < 2; i++) {
        hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
        send_ok(p, &m);
    }
    fetch(w1, 1, 0, NULL);
    fetch(w2, 1, 0, NULL);
    fetch(w3, 1, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 8);
    assert_true(F->got[6].c != F->got[7].c);
}

static void test_route_reply_fallbacks(void **state)
{
    (void)state;
    bus_client *p1 = ext("portal");
    bus_client *e = ext("echo");
    bus_client *a = ext("archive");
    hsb_envelope m = env_to("echo", HSB_PRIO_NORMAL);
    uint64_t req_id = send_ok(p1, &m);
    /* corr with an explicit `to` elsewhere: `to` decides. */
    hsb_envelope fwd = env_to("archive", HSB_PRIO_NORMAL);
    fwd.corr = req_id;
    send_ok(e, &fwd);
    fetch(a, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(a), 1);
    /* The requesting instance is gone: the reply goes to its agent, any instance. */
    bus_detach(F->b, p1);
    bus_client *p2 = ext("portal");
    hsb_envelope r;
    hsb_envelope_init(&r);
    r.corr = req_id;
    send_ok(e, &r);
    fetch(p2, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(p2), 1);
    /* An unknown corr and nothing else: no route. */
    r.corr = 999999;
    assert_int_equal(send1(e, &r).err, HSB_ENOROUTE);
}

static void test_ack_timeouts_of_several_messages(void **state)
{
    (void)state;
    bus_agent_config ac = test_config().agent_defaults;
    ac.ack_timeout_ms = 100;
    bus_set_agent_config(F->b, "worker", &ac);
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 8);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t a = send_ok(p, &m);
    bus_flush(F->b);
    tick(50);
    uint64_t b = send_ok(p, &m);
    uint64_t c = send_ok(p, &m);
    bus_flush(F->b);
    bus_ack(F->b, w, c);
    tick(50); /* a times out; b is not due yet */
    assert_int_equal(stats("worker").redelivered, 1);
    assert_int_equal(F->got[F->n_got - 1].id, a);
    assert_int_equal(F->got[F->n_got - 1].deliveries, 2);
    tick(50); /* b times out */
    assert_int_equal(stats("worker").redelivered, 2);
    assert_int_equal(F->got[F->n_got - 1].id, b);
    assert_int_equal(stats("worker").in_flight, 2);
}

/* ---- queues ------------------------------------------------------------------------------ */

static void test_priority_order_under_backlog(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = ext("worker");
    uint8_t prios[] = {HSB_PRIO_LOW, HSB_PRIO_NORMAL, HSB_PRIO_HIGH};
    for (int i = 0; i < 8; i++) {
        for (int k = 0; k < 3; k++) {
            hsb_envelope m = env_to("worker", prios[k]);
            send_ok(p, &m);
        }
    }
    hsb_envelope c = env_to("worker", HSB_PRIO_CRITICAL);
    uint64_t crit = send_ok(p, &c);
    fetch(w, 15, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 15);
    assert_int_equal(F->got[0].id, crit);
    const uint8_t want[14] = {1, 1, 1, 1, 2, 2, 3, 1, 1, 1, 1, 2, 2, 3};
    for (int i = 0; i < 14; i++) {
        assert_int_equal(F->got[1 + i].prio, want[i]);
    }
    /* FIFO within a lane: ids increase per lane. */
    uint64_t last[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < F->n_got; i++) {
        assert_true(F->got[i].id > last[F->got[i].prio]);
        last[F->got[i].prio] = F->got[i].id;
    }
}

static void test_busy_by_count_and_bytes(void **state)
{
    (void)state;
    bus_agent_config ac = test_config().agent_defaults;
    ac.queue_max_msgs = 2;
    assert_int_equal(bus_set_agent_config(F->b, "slow", &ac), HSB_OK);
    bus_client *p = ext("portal");
    hsb_envelope m = env_to("slow", HSB_PRIO_NORMAL);
    send_ok(p, &m);
    send_ok(p, &m);
    assert_int_equal(send1(p, &m).err, HSB_EBUSY);
    assert_int_equal(stats("slow").rejected_busy, 1);

    static uint8_t body[3000];
    body[0] = 0xc4; /* bin8 header is not needed: the bus never looks inside */
    ac.queue_max_msgs = 100;
    ac.queue_max_bytes = 2 * (sizeof(bus_msg) + sizeof(body)) + 100;
    assert_int_equal(bus_set_agent_config(F->b, "big", &ac), HSB_OK);
    hsb_envelope b = env_to("big", HSB_PRIO_NORMAL);
    b.body = body;
    b.body_len = sizeof(body);
    send_ok(p, &b);
    send_ok(p, &b);
    assert_int_equal(send1(p, &b).err, HSB_EBUSY);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.busy, 2);
    assert_int_equal(stats("big").queued_bytes, 2 * (sizeof(bus_msg) + sizeof(body)));
}

static void test_displacement_tells_sender(void **state)
{
    (void)state;
    bus_agent_config ac = test_config().agent_defaults;
    ac.queue_max_msgs = 2;
    assert_int_equal(bus_set_agent_config(F->b, "slow", &ac), HSB_OK);
    bus_client *a = ext("routine");
    bus_client *b = ext("emergency");
    hsb_envelope low = env_to("slow", HSB_PRIO_LOW);
    uint64_t l1 = send_ok(a, &low);
    uint64_t l2 = send_ok(a, &low);
    hsb_envelope crit = env_to("slow", HSB_PRIO_CRITICAL);
    send_ok(b, &crit);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.displaced, 1);
    /* The newest low message (l2) made room; its sender hears E_BUSY. */
    fetch(a, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(a), 1);
    assert_string_equal(F->got[0].type, "sys.error");
    assert_string_equal(F->got[0].from, "sys");
    assert_int_equal(F->got[0].corr, l2);
    assert_string_equal(F->got[0].err, "E_BUSY");
    bus_client *s = ext("slow");
    fetch(s, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(s), 2);
    assert_int_equal(F->got[1].prio, HSB_PRIO_CRITICAL);
    assert_int_equal(F->got[2].id, l1);
}

/* ---- batching ---------------------------------------------------------------------------- */

static void test_batch_flush_at_max(void **state)
{
    (void)state;
    bus_set_batching(F->b, 3, 1000);
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    strcpy(m.batch, "k");
    send_ok(p, &m);
    send_ok(p, &m);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 0); /* held */
    assert_int_equal(stats("worker").queued[HSB_PRIO_NORMAL], 2);
    send_ok(p, &m);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 3);
    assert_int_equal(F->calls, 1); /* together, in one deliver call */
}

static void test_batch_flush_at_linger(void **state)
{
    (void)state;
    bus_set_batching(F->b, 64, 5);
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    strcpy(m.batch, "k");
    send_ok(p, &m);
    tick(2);
    send_ok(p, &m);
    tick(2);
    assert_int_equal(count_got(w), 0);
    assert_int_equal(bus_next_timer(F->b), T0 + 5);
    tick(1);
    assert_int_equal(count_got(w), 2);
    assert_int_equal(F->calls, 1);
}

static void test_batch_critical_not_held(void **state)
{
    (void)state;
    bus_set_batching(F->b, 64, 1000);
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    hsb_envelope m = env_to("worker", HSB_PRIO_CRITICAL);
    strcpy(m.batch, "k");
    send_ok(p, &m);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 1);
}

/* ---- deadlines --------------------------------------------------------------------------- */

static void test_expired_by_timer_tells_sender(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    ext("worker"); /* attached, but never fetches */
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.ttl_ms = 100;
    uint64_t id = send_ok(p, &m);
    assert_int_equal(bus_next_timer(F->b), T0 + 100);
    tick(99);
    assert_int_equal(stats("worker").expired, 0);
    tick(1);
    assert_int_equal(stats("worker").expired, 1);
    assert_int_equal(stats("worker").queued[HSB_PRIO_NORMAL], 0);
    assert_int_equal(count_events("expired"), 1);
    fetch(p, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 1);
    assert_string_equal(F->got[0].type, "sys.error");
    assert_int_equal(F->got[0].corr, id);
    assert_string_equal(F->got[0].err, "E_EXPIRED");
}

static void test_expired_never_delivered_at_dequeue(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = ext("worker");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.ttl_ms = 50;
    uint64_t id = send_ok(p, &m);
    m.ttl_ms = 0; /* the agent's default: 30 s */
    uint64_t live = send_ok(p, &m);
    F->now += 60; /* no timer run: the flush itself must not hand it out */
    fetch(w, 10, 0, NULL);
    fetch(p, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 1);
    for (size_t i = 0; i < F->n_got; i++) {
        if (F->got[i].c == w) {
            assert_int_equal(F->got[i].id, live);
        } else {
            assert_int_equal(F->got[i].corr, id);
            assert_string_equal(F->got[i].err, "E_EXPIRED");
        }
    }
    assert_int_equal(count_got(p), 1);
}

static void test_fetch_wait_answers_empty(void **state)
{
    (void)state;
    bus_client *w = ext("worker");
    fetch(w, 10, 100, (void *)7);
    bus_flush(F->b);
    assert_int_equal(F->empty_calls, 0);
    assert_int_equal(stats("worker").parked_fetches, 1);
    tick(99);
    assert_int_equal(F->empty_calls, 0);
    tick(1);
    assert_int_equal(F->empty_calls, 1);
    assert_ptr_equal(F->empty_cookie, (void *)7);
    assert_int_equal(stats("worker").parked_fetches, 0);
    /* A cancelled fetch is never answered. */
    fetch(w, 10, 100, (void *)8);
    bus_fetch_cancel(F->b, w, (void *)8);
    tick(200);
    assert_int_equal(F->empty_calls, 1);
}

/* ---- breakers ---------------------------------------------------------------------------- */

static void fail_n(bus_client *p, bus_client *w, int n)
{
    for (int i = 0; i < n; i++) {
        hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
        hsb_send_result r = send1(p, &m);
        if (r.err != HSB_OK) {
            return;
        }
        bus_flush(F->b);
        bus_nack(F->b, w, r.id, "handler failed");
        bus_flush(F->b);
    }
}

static void test_breaker_opens_on_consecutive_and_fails_fast(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *ops = attach("ops", NULL, "sys.breaker", BUS_CLIENT_PUSH, 16);
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    fail_n(p, w, 3);
    bus_agent_stats st = stats("worker");
    assert_int_equal(st.breaker, BUS_BREAKER_OPEN);
    assert_int_equal(st.breaker_transitions, 1);
    assert_int_equal(st.breaker_opened_at_ms, T0);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    assert_int_equal(send1(p, &m).err, HSB_EBREAKER_OPEN);
    assert_int_equal(stats("worker").rejected_breaker, 1);
    /* Logged once, and published on sys.breaker from "sys". */
    assert_int_equal(count_events("breaker"), 1);
    for (size_t i = 0; i < F->n_ev; i++) {
        if (strcmp(F->ev[i].event, "breaker") == 0) {
            assert_string_equal(F->ev[i].agent, "worker");
            assert_int_equal(F->ev[i].from, BUS_BREAKER_CLOSED);
            assert_int_equal(F->ev[i].to, BUS_BREAKER_OPEN);
        }
    }
    assert_int_equal(count_got(ops), 1);
    for (size_t i = 0; i < F->n_got; i++) {
        if (F->got[i].c == ops) {
            assert_string_equal(F->got[i].from, "sys");
            assert_string_equal(F->got[i].type, "sys.breaker");
            assert_string_equal(F->got[i].bagent, "worker");
            assert_string_equal(F->got[i].bto, "open");
        }
    }
}

static void test_breaker_opens_on_rate(void **state)
{
    (void)state;
    bus_agent_config ac = test_config().agent_defaults;
    ac.breaker.failure_threshold = 0;
    ac.breaker.rate_min_calls = 4;
    ac.breaker.rate_threshold_pct = 50;
    bus_set_agent_config(F->b, "worker", &ac);
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    for (int i = 0; i < 4; i++) {
        hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
        uint64_t id = send_ok(p, &m);
        bus_flush(F->b);
        if (i % 2 == 0) {
            bus_ack(F->b, w, id);
        } else {
            bus_nack(F->b, w, id, "no");
        }
    }
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_OPEN);
}

static void test_breaker_half_open_probe(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    fail_n(p, w, 3); /* the third failure opens it; that message waits in the queue */
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_OPEN);
    size_t before = count_got(w);
    tick(999);
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_OPEN);
    assert_int_equal(count_got(w), before); /* nothing delivered while open */
    tick(1);
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_HALF_OPEN);
    /* Exactly one probe goes out: the waiting message. */
    assert_int_equal(count_got(w), before + 1);
    /* One new message is admitted as a probe, the next is refused; neither is delivered while
     * the probe is out. */
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    send_ok(p, &m);
    assert_int_equal(send1(p, &m).err, HSB_EBREAKER_OPEN);
    bus_flush(F->b);
    assert_int_equal(count_got(w), before + 1);
    /* A failed probe re-opens. */
    bus_nack(F->b, w, F->got[F->n_got - 1].id, "still broken");
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_OPEN);
    tick(1000);
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_HALF_OPEN);
    assert_int_equal(count_got(w), before + 2);
    /* A successful probe closes it, and the rest flows. */
    bus_ack(F->b, w, F->got[F->n_got - 1].id);
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_CLOSED);
    bus_flush(F->b);
    assert_int_equal(count_got(w), before + 3);
    assert_int_equal(send1(p, &m).err, HSB_OK);
    assert_int_equal(stats("worker").breaker_transitions, 5);
}

static void test_breaker_forced_and_durable_stays_queued(void **state)
{
    (void)state;
    with_persist();
    bus_client *p = ext("portal");
    ext("worker");
    assert_int_equal(bus_breaker_force(F->b, "nobody", BUS_BREAKER_FORCE_OPEN), HSB_ENOTFOUND);
    assert_int_equal(bus_breaker_force(F->b, "worker", BUS_BREAKER_FORCE_OPEN), HSB_OK);
    bus_agent_stats st = stats("worker");
    assert_int_equal(st.breaker, BUS_BREAKER_OPEN);
    assert_true(st.breaker_forced);
    assert_true(F->audits > 0);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    assert_int_equal(send1(p, &m).err, HSB_EBREAKER_OPEN);
    /* Durable messages stay queued while open. */
    m.durable = true;
    hsb_send_result r;
    bool pending = false;
    assert_int_equal(bus_send(F->b, p, &m, 1, &r, (void *)9, &pending), HSB_OK);
    assert_true(pending);
    bus_persist_done(F->b, F->last_save_token, HSB_OK);
    assert_int_equal(r.err, HSB_OK);
    tick(5000); /* forced: no recovery */
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_OPEN);
    assert_int_equal(stats("worker").queued[HSB_PRIO_NORMAL], 1);
    assert_int_equal(bus_breaker_force(F->b, "worker", BUS_BREAKER_FORCE_CLOSE), HSB_OK);
    assert_int_equal(stats("worker").breaker, BUS_BREAKER_CLOSED);
    assert_int_equal(bus_breaker_force(F->b, "worker", BUS_BREAKER_RESET), HSB_OK);
    assert_false(stats("worker").breaker_forced);
    bus_flush(F->b);
    assert_int_equal(count_events("breaker"), 2);
}

static void test_breaker_deadline_overrun_is_failure(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.ttl_ms = 100;
    uint64_t id = send_ok(p, &m);
    bus_flush(F->b);
    F->now += 200;
    bus_ack(F->b, w, id);
    assert_int_equal(stats("worker").breaker_consecutive_failures, 1);
    assert_int_equal(stats("worker").acked, 1);
}

/* ---- at-least-once ----------------------------------------------------------------------- */

static void test_nack_redelivers_at_front(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 1);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t a = send_ok(p, &m);
    uint64_t b = send_ok(p, &m);
    bus_flush(F->b);
    assert_int_equal(F->n_got, 1); /* mailbox of one */
    bus_nack(F->b, w, a, "try again");
    bus_flush(F->b);
    assert_int_equal(F->n_got, 2);
    assert_int_equal(F->got[1].id, a); /* before b: the front of its lane */
    assert_int_equal(F->got[1].deliveries, 2);
    bus_ack(F->b, w, a);
    bus_flush(F->b);
    assert_int_equal(F->got[2].id, b);
    assert_int_equal(F->got[2].deliveries, 1);
    bus_agent_stats st = stats("worker");
    assert_int_equal(st.nacked, 1);
    assert_int_equal(st.redelivered, 1);
    assert_int_equal(st.delivered, 3);
    assert_int_equal(st.in_flight, 1);
}

static void test_ack_timeout_redelivers(void **state)
{
    (void)state;
    bus_agent_config ac = test_config().agent_defaults;
    ac.ack_timeout_ms = 500;
    bus_set_agent_config(F->b, "worker", &ac);
    bus_client *p = ext("portal");
    bus_client *w = ext("worker");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t id = send_ok(p, &m);
    fetch(w, 10, 0, NULL);
    bus_flush(F->b);
    tick(499);
    assert_int_equal(stats("worker").in_flight, 1);
    tick(1);
    assert_int_equal(stats("worker").in_flight, 0);
    assert_int_equal(stats("worker").redelivered, 1);
    assert_int_equal(stats("worker").breaker_consecutive_failures, 1);
    fetch(w, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->got[1].id, id);
    assert_int_equal(F->got[1].deliveries, 2);
    /* An ack in a fetch settles it, and a late timer entry does nothing. */
    hsb_fetch_req req;
    memset(&req, 0, sizeof(req));
    uint64_t acks[1] = {id};
    req.acks = acks;
    req.n_acks = 1;
    req.max = 1;
    assert_int_equal(bus_fetch(F->b, w, &req, NULL), HSB_OK);
    assert_int_equal(stats("worker").in_flight, 0);
    tick(1000);
    assert_int_equal(stats("worker").redelivered, 1);
    /* A nack in a fetch redelivers at once, with its reason in the event. */
    hsb_envelope m2 = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t id2 = send_ok(p, &m2);
    fetch(w, 10, 0, NULL);
    bus_flush(F->b);
    hsb_nack nk = {.id = id2, .reason = "parse error"};
    memset(&req, 0, sizeof(req));
    req.nacks = &nk;
    req.n_nacks = 1;
    req.max = 5;
    assert_int_equal(bus_fetch(F->b, w, &req, NULL), HSB_OK);
    bus_flush(F->b);
    assert_int_equal(F->got[F->n_got - 1].id, id2);
    assert_int_equal(F->got[F->n_got - 1].deliveries, 2);
    bool seen = false;
    for (size_t i = 0; i < F->n_ev; i++) {
        seen |=
            strcmp(F->ev[i].event, "redeliver") == 0 && strcmp(F->ev[i].detail, "parse error") == 0;
    }
    assert_true(seen);
}

static void test_expired_on_redelivery(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 1);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.ttl_ms = 100;
    uint64_t id = send_ok(p, &m);
    tick(10);            /* delivered: the queue is empty, its sweep has nothing left */
    tick(90);            /* the sweep fires on an empty queue */
    bus_detach(F->b, w); /* back to the queue, nobody to take it; the deadline has passed */
    tick(1);
    assert_int_equal(stats("worker").expired, 1);
    fetch(p, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->got[F->n_got - 1].corr, id);
    assert_string_equal(F->got[F->n_got - 1].err, "E_EXPIRED");
}

static void test_redelivered_message_expires_by_timer(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 1);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.ttl_ms = 100;
    send_ok(p, &m);
    tick(10); /* A is in flight, the mailbox is full */
    m.ttl_ms = 20;
    send_ok(p, &m); /* B waits and expires at +30: that sweep leaves the queue empty, disarmed */
    tick(20);
    assert_int_equal(stats("worker").expired, 1);
    bus_detach(F->b, w); /* A back in the queue with 70 ms to live and no instance */
    assert_int_equal(stats("worker").queued[HSB_PRIO_NORMAL], 1);
    tick(70);
    assert_int_equal(stats("worker").expired, 2);
    assert_int_equal(stats("worker").queued[HSB_PRIO_NORMAL], 0);
}

static void test_detach_redelivers_to_other_instance(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w1 = ext("worker");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t id = send_ok(p, &m);
    fetch(w1, 10, 0, NULL);
    bus_flush(F->b);
    bus_client *w2 = ext("worker");
    bus_detach(F->b, w1);
    assert_int_equal(stats("worker").breaker_consecutive_failures, 1);
    assert_int_equal(stats("worker").instances, 1);
    fetch(w2, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(w2), 1);
    assert_int_equal(F->got[1].id, id);
    assert_int_equal(F->got[1].deliveries, 2);
}

static void test_max_deliveries_dead_letters(void **state)
{
    (void)state;
    with_persist();
    bus_agent_config ac = test_config().agent_defaults;
    ac.max_deliveries = 2;
    ac.breaker.failure_threshold = 0;
    bus_set_agent_config(F->b, "worker", &ac);
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 4);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t id = send_ok(p, &m);
    bus_flush(F->b);
    bus_nack(F->b, w, id, "bad input");
    bus_flush(F->b);
    assert_int_equal(F->dead, 0);
    bus_nack(F->b, w, id, "bad input");
    assert_int_equal(F->dead, 1);
    assert_string_equal(F->dead_reason, "bad input");
    assert_string_equal(F->dead_agent, "worker");
    assert_int_equal(F->dead_deliveries, 2);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 2);
    assert_int_equal(stats("worker").dead_lettered, 1);
    assert_int_equal(count_events("dead_letter"), 1);
    fetch(p, 10, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(count_got(p), 1);
    assert_string_equal(F->got[F->n_got - 1].type, "sys.error");
    assert_int_equal(F->got[F->n_got - 1].corr, id);
}

/* ---- duplicates and durability ----------------------------------------------------------- */

static void test_duplicate_cid_answers_first_id(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 16);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    strcpy(m.cid, "order-17");
    uint64_t first = send_ok(p, &m);
    assert_int_equal(send_ok(p, &m), first);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 1);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.duplicates, 1);
    assert_int_equal(t.routed, 1);
    /* Another agent's cid is its own. */
    bus_client *q = ext("other");
    assert_true(send_ok(q, &m) != first);
    /* After the window it is a new message. */
    F->now += 300000;
    assert_true(send_ok(p, &m) != first);
}

static void test_durable_without_persist(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    ext("worker");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.durable = true;
    assert_int_equal(send1(p, &m).err, HSB_EDURABLE);
}

static void test_durable_with_persist(void **state)
{
    (void)state;
    with_persist();
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 4);
    hsb_envelope m[2] = {env_to("worker", HSB_PRIO_NORMAL), env_to("nobody", HSB_PRIO_NORMAL)};
    m[0].durable = true;
    hsb_send_result r[2];
    bool pending = false;
    assert_int_equal(bus_send(F->b, p, m, 2, r, (void *)5, &pending), HSB_OK);
    assert_true(pending);
    assert_int_equal(F->saves, 1);
    assert_int_equal(r[1].err, HSB_ENOROUTE); /* final at once */
    bus_flush(F->b);
    assert_int_equal(count_got(w), 0); /* not queued before commit */
    assert_int_equal(F->n_done, 0);
    bus_persist_done(F->b, F->last_save_token, HSB_OK);
    assert_int_equal(F->n_done, 0); /* completions come from flush only */
    assert_int_equal(r[0].err, HSB_OK);
    assert_int_equal(r[0].id, F->last_save_token);
    bus_flush(F->b);
    assert_int_equal(F->n_done, 1);
    assert_ptr_equal(F->done[0], (void *)5);
    assert_int_equal(count_got(w), 1);
    bus_ack(F->b, w, r[0].id);
    assert_int_equal(F->removes, 1);
    assert_int_equal(F->last_removed, r[0].id);

    /* A store failure is that message's result. */
    m[1] = m[0];
    assert_int_equal(bus_send(F->b, p, m, 1, r, (void *)6, &pending), HSB_OK);
    assert_true(pending);
    bus_persist_done(F->b, F->last_save_token, HSB_EIO);
    assert_int_equal(r[0].err, HSB_EIO);
    F->save_result = HSB_EIO; /* refused at once */
    assert_int_equal(bus_send(F->b, p, m, 1, r, (void *)7, &pending), HSB_OK);
    assert_false(pending);
    assert_int_equal(r[0].err, HSB_EIO);
    bus_flush(F->b);
    assert_int_equal(F->n_done, 2);
    /* Left pending: bus_free releases it without a callback (ASan/valgrind check the leak). */
    F->save_result = HSB_OK;
    static hsb_send_result left[2];
    m[1] = m[0];
    assert_int_equal(bus_send(F->b, p, m, 2, left, (void *)8, &pending), HSB_OK);
    assert_true(pending);
    assert_false(bus_drain(F->b));
}

static void test_restore_and_expired_restore(void **state)
{
    (void)state;
    with_persist();
    hsb_envelope e = env_to("worker", HSB_PRIO_HIGH);
    e.id = 500;
    e.durable = true;
    e.deliveries = 2;
    e.deadline = (int64_t)(T0 + 1000);
    assert_int_equal(bus_restore(F->b, &e), HSB_OK);
    e.id = 501;
    e.deadline = (int64_t)(T0 - 1);
    assert_int_equal(bus_restore(F->b, &e), HSB_OK);
    assert_int_equal(F->dead, 1);
    assert_string_equal(F->dead_reason, "expired");
    assert_int_equal(F->removes, 1); /* dead-lettered, then forgotten by the durable queue */
    /* Routed by type with no route yet: the store keeps it. */
    e.to[0] = '\0';
    strcpy(e.type, "lab.order");
    e.id = 502;
    e.deadline = (int64_t)(T0 + 1000);
    assert_int_equal(bus_restore(F->b, &e), HSB_ENOROUTE);
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 4);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 1);
    assert_int_equal(F->got[0].id, 500);
    assert_int_equal(F->got[0].deliveries, 3);
    /* New ids continue after restored ones. */
    bus_client *p = ext("portal");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    assert_true(send_ok(p, &m) > 501);
}

static void test_sys_error_dropped_when_sender_gone(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    ext("worker");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    m.ttl_ms = 10;
    send_ok(p, &m);
    bus_detach(F->b, p);
    tick(10);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.expired, 1);
    assert_int_equal(t.sys_errors_dropped, 1);
    assert_int_equal(t.queued, 0);
}

static void test_send_refusals(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    ext("worker");
    hsb_envelope m[3] = {env_to("worker", 7), env_to("worker", HSB_PRIO_NORMAL),
                         env_to("worker", HSB_PRIO_LOW)};
    static uint8_t big[HSB_BODY_MAX + 1];
    m[1].body = big;
    m[1].body_len = sizeof(big);
    hsb_send_result r[3];
    bool pending;
    assert_int_equal(bus_send(F->b, p, m, 3, r, NULL, &pending), HSB_OK);
    assert_false(pending);
    assert_int_equal(r[0].err, HSB_EBADPRIO);
    assert_int_equal(r[1].err, HSB_ETOOBIG);
    assert_int_equal(r[2].err, HSB_OK); /* one bad message does not spoil the others */
    assert_int_equal(stats("worker").received, 1);
}

/* ---- stats, drain, re-entry -------------------------------------------------------------- */

static void test_stats_and_latency(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 4);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t id = send_ok(p, &m);
    bus_flush(F->b);
    F->now += 3;
    bus_ack(F->b, w, id);
    bus_agent_stats st = stats("worker");
    assert_int_equal(st.instances, 1);
    assert_int_equal(st.received, 1);
    assert_int_equal(st.delivered, 1);
    assert_int_equal(st.acked, 1);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.latency.count, 1);
    assert_int_equal(st.latency.sum_us, 3000);
    assert_int_equal(stats("portal").sent, 1);
    bus_agent_stats none;
    assert_int_equal(bus_agent_stats_get(F->b, "nobody", &none), HSB_ENOTFOUND);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.routed, 1);
    assert_int_equal(t.clients, 2);
    assert_int_equal(t.queued, 0);
}

static void count_agents(void *arg, const bus_agent_stats *st)
{
    char *names = arg;
    strcat(names, st->name);
    strcat(names, ",");
}

static void test_foreach_in_name_order(void **state)
{
    (void)state;
    ext("zeta");
    ext("alpha");
    ext("mid");
    char names[64] = "";
    bus_foreach_agent(F->b, count_agents, names);
    assert_string_equal(names, "alpha,mid,zeta,");
}

static void test_drain(void **state)
{
    (void)state;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 4);
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    uint64_t id = send_ok(p, &m);
    assert_false(bus_drain(F->b));
    hsb_send_result r;
    bool pending;
    assert_int_equal(bus_send(F->b, p, &m, 1, &r, NULL, &pending), HSB_ESHUTDOWN);
    hsb_hello h;
    memset(&h, 0, sizeof(h));
    strcpy(h.agent, "late");
    bus_client *c;
    assert_int_equal(bus_attach(F->b, &h, BUS_CLIENT_EXTERNAL, 0, NULL, &c), HSB_ESHUTDOWN);
    bus_flush(F->b);
    assert_false(bus_drain(F->b)); /* in flight */
    bus_ack(F->b, w, id);
    assert_true(bus_drain(F->b));
}

static void test_reentrant_ack_from_deliver(void **state)
{
    (void)state;
    F->auto_ack = true;
    bus_client *p = ext("portal");
    bus_client *w = attach("worker", NULL, NULL, BUS_CLIENT_PUSH, 2);
    for (int i = 0; i < 5; i++) {
        hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
        send_ok(p, &m);
    }
    bus_flush(F->b); /* acks free credit during the flush, which goes on */
    assert_int_equal(count_got(w), 5);
    assert_int_equal(stats("worker").acked, 5);
}

static void test_refetch_from_callback_does_not_spin(void **state)
{
    (void)state;
    F->refetch = true;
    bus_client *w = ext("worker");
    fetch(w, 1, 0, NULL);
    bus_flush(F->b);
    assert_int_equal(F->empty_calls, 1);
    bus_flush(F->b);
    assert_int_equal(F->empty_calls, 2);
    /* A message for the re-parked fetch is still delivered in the same flush. */
    bus_client *p = ext("portal");
    hsb_envelope m = env_to("worker", HSB_PRIO_NORMAL);
    send_ok(p, &m);
    bus_flush(F->b);
    assert_int_equal(count_got(w), 1);
    F->refetch = false;
}

static void test_attach_errors(void **state)
{
    (void)state;
    hsb_hello h;
    memset(&h, 0, sizeof(h));
    bus_client *c;
    strcpy(h.agent, "Bad Name");
    assert_int_equal(bus_attach(F->b, &h, BUS_CLIENT_EXTERNAL, 0, NULL, &c), HSB_EBADNAME);
    strcpy(h.agent, "ok");
    hsb_name bad = {"no*"};
    h.handles = &bad;
    h.n_handles = 1;
    assert_int_equal(bus_attach(F->b, &h, BUS_CLIENT_EXTERNAL, 0, NULL, &c), HSB_EBADNAME);
    bus_client *pc = attach("pusher", NULL, NULL, BUS_CLIENT_PUSH, 1);
    hsb_fetch_req req;
    memset(&req, 0, sizeof(req));
    assert_int_equal(bus_fetch(F->b, pc, &req, NULL), HSB_EINVAL);
}

/* A deterministic random walk over the whole API: under ASan/UBSan and valgrind this finds
 * use-after-free, leaks and broken invariants that the targeted tests do not reach. */
static uint64_t rnd_state = 88172645463325252ULL;
static uint32_t rnd(uint32_t n)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return (uint32_t)(rnd_state % n);
}

static void test_random_walk(void **state)
{
    (void)state;
    with_persist();
    const char *seed = getenv("HSB_TEST_SEED"); /* to explore other walks by hand */
    if (seed != NULL && strtoull(seed, NULL, 10) != 0) {
        rnd_state = strtoull(seed, NULL, 10);
    }
    static const char *agents[] = {"a", "b", "c", "d"};
    static const char *topics[] = {"t1", "t2"};
    bus_client *cl[12];
    memset(cl, 0, sizeof(cl));
    bus_agent_config ac = test_config().agent_defaults;
    ac.queue_max_msgs = 20;
    ac.ack_timeout_ms = 50;
    ac.default_ttl_ms = 400;
    for (size_t i = 0; i < 4; i++) {
        bus_set_agent_config(F->b, agents[i], &ac);
    }
    bus_set_batching(F->b, 4, 3);
    static uint64_t tokens[20000];
    size_t n_tokens = 0;
    for (int step = 0; step < 20000; step++) {
        size_t k = rnd(12);
        bus_client *c = cl[k];
        switch (rnd(10)) {
        case 0:
            if (c == NULL) {
                cl[k] = attach(agents[k % 4], k % 3 == 0 ? "x.*" : NULL, topics[k % 2],
                               k % 2 == 0 ? BUS_CLIENT_PUSH : BUS_CLIENT_EXTERNAL, 3);
            } else if (rnd(4) == 0) {
                bus_detach(F->b, c);
                cl[k] = NULL;
            }
            break;
        case 1:
        case 2:
        case 3:
            if (c != NULL) {
                hsb_envelope m = env_to(agents[rnd(4)], (uint8_t)rnd(4));
                if (rnd(4) == 0) {
                    m.to[0] = '\0';
                    strcpy(m.topic, topics[rnd(2)]);
                } else if (rnd(5) == 0) {
                    m.to[0] = '\0';
                    strcpy(m.type, "x.y");
                }
                if (rnd(3) == 0) {
                    strcpy(m.batch, "k");
                }
                if (rnd(5) == 0) {
                    snprintf(m.cid, sizeof(m.cid), "c%u", rnd(50));
                }
                if (rnd(6) == 0 && F->n_got > 0) {
                    m.corr = F->got[rnd((uint32_t)F->n_got)].id;
                }
                m.ttl_ms = rnd(3) == 0 ? rnd(300) + 1 : 0;
                m.durable = rnd(8) == 0;
                static hsb_send_result results[20000]; /* must outlive a pending send */
                bool pending;
                assert_int_equal(bus_send(F->b, c, &m, 1, &results[step], NULL, &pending), HSB_OK);
                if (pending) {
                    tokens[n_tokens++] = F->last_save_token;
                }
            }
            break;
        case 4:
            if (c != NULL && bus_client_host(c) == NULL && k % 2 == 1) {
                hsb_fetch_req req;
                memset(&req, 0, sizeof(req));
                req.max = rnd(4) + 1;
                req.wait_ms = rnd(100);
                assert_int_equal(bus_fetch(F->b, c, &req, (void *)(uintptr_t)(step + 1)), HSB_OK);
            }
            break;
        case 5:
        case 6:
            if (F->n_got > 0) {
                got *g = &F->got[rnd((uint32_t)F->n_got)];
                for (size_t j = 0; j < 12; j++) {
                    if (cl[j] == g->c && cl[j] != NULL) {
                        if (rnd(3) == 0) {
                            bus_nack(F->b, g->c, g->id, "random");
                        } else {
                            bus_ack(F->b, g->c, g->id);
                        }
                    }
                }
            }
            break;
        case 7:
            if (n_tokens > 0) {
                size_t at = rnd((uint32_t)n_tokens);
                bus_persist_done(F->b, tokens[at], rnd(4) == 0 ? HSB_EIO : HSB_OK);
                tokens[at] = tokens[--n_tokens];
            }
            break;
        case 8:
            if (rnd(20) == 0) {
                bus_breaker_force(F->b, agents[rnd(4)], (bus_breaker_action)rnd(3));
            }
            F->now += rnd(20);
            bus_run_timers(F->b);
            break;
        default:
            bus_flush(F->b);
            break;
        }
        if (F->n_got > 400) {
            F->n_got = 0; /* keep the record bounded; the messages it points at are the bus's */
        }
        F->n_ev = 0;
        F->n_done = 0;
        bus_totals t;
        bus_totals_get(F->b, &t);
        assert_true(t.clients <= 12);
    }
    bus_flush(F->b);
    /* Everyone leaves: nothing stays in flight, and what is queued waits for absent agents. */
    for (size_t j = 0; j < 12; j++) {
        if (cl[j] != NULL) {
            bus_detach(F->b, cl[j]);
        }
    }
    assert_false(n_tokens > 0 && bus_drain(F->b)); /* saves still pending hold the drain up */
    while (n_tokens > 0) {
        bus_persist_done(F->b, tokens[--n_tokens], HSB_OK);
    }
    bus_flush(F->b);
    bus_totals t;
    bus_totals_get(F->b, &t);
    assert_int_equal(t.in_flight, 0);
    assert_int_equal(t.clients, 0);
    assert_true(bus_drain(F->b));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_route_by_name),
        T(test_send_msgs_routes_the_callers_message),
        T(test_route_by_type_exact_and_prefix),
        T(test_route_topic_fanout_shares_message),
        T(test_route_no_route),
        T(test_route_reply_to_exact_instance),
        T(test_route_instances_share_load),
        T(test_route_reply_fallbacks),
        T(test_ack_timeouts_of_several_messages),
        T(test_priority_order_under_backlog),
        T(test_busy_by_count_and_bytes),
        T(test_displacement_tells_sender),
        T(test_batch_flush_at_max),
        T(test_batch_flush_at_linger),
        T(test_batch_critical_not_held),
        T(test_expired_by_timer_tells_sender),
        T(test_expired_never_delivered_at_dequeue),
        T(test_fetch_wait_answers_empty),
        T(test_breaker_opens_on_consecutive_and_fails_fast),
        T(test_breaker_opens_on_rate),
        T(test_breaker_half_open_probe),
        T(test_breaker_forced_and_durable_stays_queued),
        T(test_breaker_deadline_overrun_is_failure),
        T(test_nack_redelivers_at_front),
        T(test_ack_timeout_redelivers),
        T(test_expired_on_redelivery),
        T(test_redelivered_message_expires_by_timer),
        T(test_detach_redelivers_to_other_instance),
        T(test_max_deliveries_dead_letters),
        T(test_duplicate_cid_answers_first_id),
        T(test_durable_without_persist),
        T(test_durable_with_persist),
        T(test_restore_and_expired_restore),
        T(test_sys_error_dropped_when_sender_gone),
        T(test_send_refusals),
        T(test_stats_and_latency),
        T(test_foreach_in_name_order),
        T(test_drain),
        T(test_reentrant_ack_from_deliver),
        T(test_refetch_from_callback_does_not_spin),
        T(test_attach_errors),
        T(test_random_walk),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
