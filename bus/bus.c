/*
 * bus/bus.c - the broker core: ties routing, queues, batching, deadlines, breakers, in-flight
 * tracking and duplicate suppression together behind bus.h.
 *
 * Design note.
 *
 * Ownership and threads. Everything here belongs to the daemon's loop thread; there is no lock.
 * The only shared state is the reference count of a bus_msg (atomic), because agent threads drop
 * their references while they handle a batch.
 *
 * Objects. A bus_agent exists per agent name (created by configuration, by the first attach, or by
 * a restored message); it is never freed before the bus, so timers may point at it. It owns the
 * shared queue (bus_prioq, four lanes), the batcher (messages held by batch key), the breaker and
 * the statistics, and lists its connected instances. A bus_client is one instance: its own small
 * queue for what is addressed to the instance itself (replies by corr, sys.error envelopes), its
 * in-flight table, and its parked fetches. Clients are found by session through an id map, so
 * timers and the reply map hold sessions, never client pointers.
 *
 * Flow. bus_send resolves destinations (router), checks breaker and bounds, allocates the one
 * bus_msg (the only allocation per message; topic fan-out shares it) and queues a reference per
 * destination, or, for a durable message, asks the store first and queues it when
 * bus_persist_done arrives. bus_flush is the only place that calls the host: it reports queued
 * events and send completions, then matches queued messages to credit: for each agent, the
 * instance with the most free credit (round robin among equals) gets as many messages as one
 * parked fetch (or its free mailbox) allows, in priority order, in one deliver call. Delivered
 * messages move to that client's in-flight table with an ack deadline; ack settles them, and a
 * nack, ack timeout or detach puts them back at the front of their lane until max_deliveries,
 * then they are dead-lettered. Because host callbacks happen only in bus_flush, and bus_flush
 * re-reads its state after each callback, the host may call back into the bus from a callback.
 *
 * Time. All timing is lazy, in one min-heap (timer.c) whose entries are checked against the
 * current state when they come due, so nothing is ever cancelled. There is no timer per message:
 * queue expiry is one entry per agent at its earliest deadline, which sweeps that agent's queues
 * and re-arms at the next; ack timeouts are one entry per client at its earliest ack deadline
 * (deadlines grow with delivery order, so a healthy client re-arms about once per ack timeout);
 * batch linger and breaker recovery are one entry per agent; a fetch wait is one entry per parked
 * fetch. Expired messages are also dropped when they reach the head of a queue, so none is ever
 * delivered late, whenever the timers run.
 *
 * Errors after acceptance reach the sender as sys.error envelopes in its own instance queue; the
 * bus never answers a sys.error with another one, and counts what it cannot deliver.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <msgpack.h>

#include "bus/batch.h"
#include "bus/breaker.h"
#include "bus/bus.h"
#include "bus/dedup.h"
#include "bus/hist.h"
#include "bus/idmap.h"
#include "bus/inflight.h"
#include "bus/prioq.h"
#include "bus/router.h"
#include "bus/timer.h"

#define BUS_FETCH_MAX_DEFAULT 64
#define BUS_REPLY_MAP_MAX     65536
#define BUS_SYS_BODY_MAX      512

typedef struct bus_fetch_park {
    void *cookie;
    uint32_t max;
    uint64_t due;       /* answer empty at or after this time */
    uint64_t flush_seq; /* b->flush_seq when parked */
} bus_fetch_park;

typedef struct bus_agent {
    char name[HSB_NAME_MAX + 1];
    bus_agent_config cfg;
    bus_prioq q;
    bus_batcher batch;
    bus_breaker br;
    bus_client **clients;
    size_t n_clients;
    size_t cap_clients;
    size_t rr;                 /* round-robin start among equal credit */
    uint32_t probes_in_flight; /* half-open probes delivered and not settled */
    uint64_t sweep_at;         /* the armed expiry sweep, 0 = none */
    uint64_t batch_at;         /* the armed linger release, 0 = none */
    uint64_t received, delivered, acked, nacked, redelivered, expired, dead_lettered;
    uint64_t rejected_busy, rejected_breaker, sent;
    bus_hist latency;
} bus_agent;

struct bus_client {
    bus_agent *agent;
    uint64_t session;
    bus_client_kind kind;
    uint32_t mailbox;
    void *host_ctx;
    bus_prioq direct; /* addressed to this instance: replies, sys.error */
    bus_inflight inflight;
    uint64_t ack_at;         /* the armed ack-timeout scan, 0 = none */
    bus_fetch_park *fetches; /* FIFO */
    size_t n_fetches;
    size_t cap_fetches;
    uint64_t fetch_credit; /* sum of the parked fetches' max */
    hsb_name *handles;
    size_t n_handles;
    hsb_name *subscribes;
    size_t n_subscribes;
};

/* One bus_send call that still waits for the store. */
typedef struct bus_send_req {
    void *cookie;
    hsb_send_result *results;
    size_t remaining;
} bus_send_req;

/* One durable message waiting for bus_persist_done; the token is its id. */
typedef struct bus_pending {
    bus_send_req *req;
    size_t idx;
    bus_msg *msg;
} bus_pending;

/* An event waiting for the next bus_flush, with its own copies of the strings. */
typedef struct bus_qevent {
    char event[24];
    char agent[HSB_NAME_MAX + 1];
    bool has_agent;
    uint64_t msg_id;
    bus_breaker_state from, to;
    char detail[160];
} bus_qevent;

typedef struct bus_dest {
    bus_agent *agent;
    bus_client *client; /* non-NULL: the instance's own queue */
} bus_dest;

struct bus {
    bus_config cfg;
    bus_host_ops ops;
    void *host;
    bus_persist_ops pops;
    void *pctx;
    bool has_persist;
    bus_agent **agents; /* sorted by name */
    size_t n_agents;
    size_t cap_agents;
    bus_dest *dests;     /* scratch for routing, n_agents + 1 entries */
    void **topic_agents; /* scratch for topic matches, n_agents + 1 entries */
    bus_idmap clients;   /* session -> bus_client* */
    uint64_t next_session;
    uint64_t next_id;
    bus_router router;
    bus_dedup dedup;
    bus_timer_heap timers;
    bus_idmap pending; /* token -> bus_pending* */
    void **done;       /* send_done cookies for the next flush */
    size_t n_done;
    size_t cap_done;
    bus_qevent *events;
    size_t n_events;
    size_t cap_events;
    bus_delivery *scratch; /* the array given to deliver */
    size_t cap_scratch;
    bool draining;
    bool flushing;
    uint64_t flush_seq; /* counts bus_flush calls */
    bus_totals t;       /* counters; the gauges are computed by bus_totals_get */
};

/* ---- small helpers ----------------------------------------------------------------------- */

static uint64_t bus_now(const bus *b)
{
    return b->cfg.clock_ms(b->cfg.clock_arg);
}

static uint64_t bus_system_clock(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t bus_deadline_of(const bus_msg *m)
{
    return m->env.deadline > 0 ? (uint64_t)m->env.deadline : UINT64_MAX;
}

static bool bus_is_sys_error(const bus_msg *m)
{
    return strcmp(m->env.type, "sys.error") == 0;
}

static void bus_arm(bus *b, bus_timer_kind kind, uint64_t at, void *obj, uint64_t id, uint64_t id2,
                    uint64_t gen)
{
    bus_timer_entry e = {.at = at, .id = id, .id2 = id2, .gen = gen, .obj = obj, .kind = kind};
    /* Out of memory here loses a wake-up, not a message: expired messages are still dropped at
     * dequeue, and the next armed timer sweeps. */
    (void)bus_timer_add(&b->timers, &e);
}

static void bus_event_queue(bus *b, const char *event, const bus_agent *a, uint64_t msg_id,
                            bus_breaker_state from, bus_breaker_state to, const char *detail)
{
    if (b->n_events == b->cap_events) {
        size_t ncap = b->cap_events != 0 ? b->cap_events * 2 : 16;
        bus_qevent *nv = realloc(b->events, ncap * sizeof(*nv));
        if (nv == NULL) {
            return; /* an event is a log line; losing one under memory pressure is acceptable */
        }
        b->events = nv;
        b->cap_events = ncap;
    }
    bus_qevent *q = &b->events[b->n_events++];
    snprintf(q->event, sizeof(q->event), "%s", event);
    q->has_agent = a != NULL;
    snprintf(q->agent, sizeof(q->agent), "%s", a != NULL ? a->name : "");
    q->msg_id = msg_id;
    q->from = from;
    q->to = to;
    snprintf(q->detail, sizeof(q->detail), "%s", detail != NULL ? detail : "");
}

/* A msgpack write callback into a fixed buffer: sys bodies are small and bounded. */
typedef struct bus_packbuf {
    char buf[BUS_SYS_BODY_MAX];
    size_t len;
} bus_packbuf;

static int bus_packbuf_write(void *data, const char *buf, size_t len)
{
    bus_packbuf *pb = data;
    if (len > sizeof(pb->buf) - pb->len) {
        return -1;
    }
    memcpy(pb->buf + pb->len, buf, len);
    pb->len += len;
    return 0;
}

static void bus_pack_str(msgpack_packer *pk, const char *s)
{
    size_t len = strlen(s);
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

/* ---- agents and clients ------------------------------------------------------------------ */

static bus_agent *bus_agent_find(const bus *b, const char *name, size_t *pos)
{
    size_t lo = 0, hi = b->n_agents;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(b->agents[mid]->name, name);
        if (c == 0) {
            if (pos != NULL) {
                *pos = mid;
            }
            return b->agents[mid];
        }
        if (c < 0) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    if (pos != NULL) {
        *pos = lo;
    }
    return NULL;
}

static hsb_err bus_agent_get(bus *b, const char *name, bus_agent **out)
{
    size_t pos;
    bus_agent *a = bus_agent_find(b, name, &pos);
    if (a != NULL) {
        *out = a;
        return HSB_OK;
    }
    if (b->n_agents == b->cap_agents) {
        size_t ncap = b->cap_agents != 0 ? b->cap_agents * 2 : 8;
        bus_agent **nv = realloc(b->agents, ncap * sizeof(*nv));
        if (nv == NULL) {
            return HSB_ENOMEM;
        }
        b->agents = nv;
        bus_dest *nd = realloc(b->dests, (ncap + 1) * sizeof(*nd));
        if (nd == NULL) {
            return HSB_ENOMEM;
        }
        b->dests = nd;
        void **nt = realloc(b->topic_agents, (ncap + 1) * sizeof(*nt));
        if (nt == NULL) {
            return HSB_ENOMEM;
        }
        b->topic_agents = nt;
        b->cap_agents = ncap;
    }
    a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return HSB_ENOMEM;
    }
    snprintf(a->name, sizeof(a->name), "%s", name);
    a->cfg = b->cfg.agent_defaults;
    bus_prioq_init(&a->q, a->cfg.queue_max_msgs, a->cfg.queue_max_bytes, b->cfg.weights);
    bus_batch_init(&a->batch);
    bus_breaker_init(&a->br, &a->cfg.breaker);
    memmove(&b->agents[pos + 1], &b->agents[pos], (b->n_agents - pos) * sizeof(*b->agents));
    b->agents[pos] = a;
    b->n_agents++;
    *out = a;
    return HSB_OK;
}

static bus_client *bus_client_by_session(const bus *b, uint64_t session)
{
    uint64_t v;
    if (session == 0 || !bus_idmap_get(&b->clients, session, &v)) {
        return NULL;
    }
    return (bus_client *)(uintptr_t)v;
}

static uint64_t bus_client_credit(const bus_client *c)
{
    if (c->kind == BUS_CLIENT_PUSH) {
        size_t used = bus_inflight_len(&c->inflight);
        return used < c->mailbox ? c->mailbox - used : 0;
    }
    return c->fetch_credit;
}

/* Arms the agent's expiry sweep for a message with this deadline, if it is the earliest. */
static void bus_note_deadline(bus *b, bus_agent *a, const bus_msg *m)
{
    uint64_t d = bus_deadline_of(m);
    if (d == UINT64_MAX) {
        return;
    }
    if (a->sweep_at == 0 || d < a->sweep_at) {
        a->sweep_at = d;
        bus_arm(b, BUS_TIMER_SWEEP, d, a, 0, 0, d);
    }
}

/* ---- failure paths: sys.error, expiry, dead letters, breaker transitions --------------------- */

static void bus_enqueue_sys_error(bus *b, const bus_msg *orig, hsb_err err, const char *text)
{
    if (orig->sender_session == 0 || bus_is_sys_error(orig)) {
        return; /* the daemon itself, a restored message, or an error about an error */
    }
    bus_client *c = bus_client_by_session(b, orig->sender_session);
    if (c == NULL) {
        b->t.sys_errors_dropped++;
        return;
    }
    bus_packbuf pb = {.len = 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pb, bus_packbuf_write);
    const char *wire = hsb_err_wire(err);
    msgpack_pack_map(&pk, 2);
    bus_pack_str(&pk, "err");
    bus_pack_str(&pk, wire != NULL ? wire : "E_INTERNAL");
    bus_pack_str(&pk, "msg");
    bus_pack_str(&pk, text);

    hsb_envelope env;
    memset(&env, 0, sizeof(env));
    env.prio = HSB_PRIO_HIGH;
    env.corr = orig->env.id;
    snprintf(env.from, sizeof(env.from), "sys");
    snprintf(env.to, sizeof(env.to), "%s", c->agent->name);
    snprintf(env.type, sizeof(env.type), "sys.error");
    env.body = (const uint8_t *)pb.buf;
    env.body_len = pb.len;
    bus_msg *m = bus_msg_new(&env);
    if (m == NULL) {
        b->t.sys_errors_dropped++;
        return;
    }
    uint64_t now = bus_now(b);
    m->env.id = b->next_id++;
    m->env.deadline = (int64_t)(now + c->agent->cfg.default_ttl_ms);
    m->enqueue_ms = now;
    bus_prioq_entry e = {.msg = m, .deliveries = 0};
    size_t nv = 0;
    /* No displacement for errors: that could start a chain of errors about errors. */
    if (bus_prioq_put(&c->direct, e, 0, 0, NULL, 0, &nv) != HSB_OK) {
        b->t.sys_errors_dropped++;
        bus_msg_unref(m);
        return;
    }
    bus_note_deadline(b, c->agent, m);
}

/* The durable copy of m is no longer needed by destination a. */
static void bus_durable_settle(bus *b, bus_msg *m)
{
    if (!m->env.durable || m->durable_dests == 0) {
        return;
    }
    if (--m->durable_dests == 0 && b->has_persist && b->pops.remove != NULL) {
        b->pops.remove(b->pctx, m->env.id);
    }
}

/* Consumes the reference of m: it failed for good at destination a. */
static void bus_dead_letter(bus *b, bus_agent *a, bus_msg *m, uint32_t deliveries,
                            const char *reason)
{
    char detail[160];
    a->dead_lettered++;
    b->t.dead_lettered++;
    snprintf(detail, sizeof(detail), "agent=%s id=%llu deliveries=%u reason=%s", a->name,
             (unsigned long long)m->env.id, deliveries, reason);
    if (b->has_persist) {
        if (b->pops.dead_letter != NULL) {
            b->pops.dead_letter(b->pctx, m, a->name, deliveries, reason);
        }
        if (b->pops.audit != NULL) {
            b->pops.audit(b->pctx, "dead_letter", detail);
        }
    }
    bus_event_queue(b, "dead_letter", a, m->env.id, 0, 0, reason);
    char text[HSB_REASON_MAX + 64];
    snprintf(text, sizeof(text), "dead-lettered after %u deliveries: %s", deliveries, reason);
    bus_enqueue_sys_error(b, m, HSB_EINTERNAL, text);
    bus_router_reply_forget(&b->router, m->env.id);
    bus_durable_settle(b, m);
    bus_msg_unref(m);
}

/* Consumes the reference of m: its deadline passed before it was delivered to a. */
static void bus_expire(bus *b, bus_agent *a, bus_msg *m, uint32_t deliveries)
{
    a->expired++;
    b->t.expired++;
    bus_event_queue(b, "expired", a, m->env.id, 0, 0, "deadline passed before delivery");
    bus_enqueue_sys_error(b, m, HSB_EEXPIRED, "deadline passed before delivery");
    if (m->env.durable && b->has_persist && b->pops.dead_letter != NULL) {
        b->pops.dead_letter(b->pctx, m, a->name, deliveries, "expired");
    }
    bus_router_reply_forget(&b->router, m->env.id);
    bus_durable_settle(b, m);
    bus_msg_unref(m);
}

static hsb_err bus_enqueue(bus *b, const bus_dest *d, bus_msg *m, uint64_t now);

static size_t bus_resolve(bus *b, const hsb_envelope *env, uint64_t now);
static hsb_err bus_enqueue_all(bus *b, bus_msg *m, size_t n, uint64_t now);
static uint32_t bus_ttl_for(const bus *b, const hsb_envelope *env, size_t n);

/* Routes a message the daemon originates (from "sys") to every subscriber of env->topic. */
static void bus_publish_sys(bus *b, hsb_envelope *env, uint64_t now)
{
    hsb_envelope by_topic = *env; /* route by topic only, whatever type it carries */
    by_topic.to[0] = '\0';
    by_topic.type[0] = '\0';
    by_topic.corr = 0;
    size_t n = bus_resolve(b, &by_topic, now);
    if (n == 0) {
        return; /* nobody listens */
    }
    snprintf(env->from, sizeof(env->from), "sys");
    bus_msg *m = bus_msg_new(env);
    if (m == NULL) {
        return;
    }
    m->env.id = b->next_id++;
    m->env.deadline = (int64_t)(now + bus_ttl_for(b, env, n));
    m->enqueue_ms = now;
    (void)bus_enqueue_all(b, m, n, now);
    bus_msg_unref(m);
}

static void bus_on_transition(bus *b, bus_agent *a, const bus_breaker_transition *t, uint64_t now)
{
    const char *from = bus_breaker_state_name(t->from);
    const char *to = bus_breaker_state_name(t->to);
    char detail[160];
    snprintf(detail, sizeof(detail), "agent=%s from=%s to=%s reason=%s", a->name, from, to,
             t->reason);
    bus_event_queue(b, "breaker", a, 0, t->from, t->to, t->reason);
    if (b->has_persist && b->pops.audit != NULL) {
        b->pops.audit(b->pctx, "breaker", detail);
    }
    if (t->to == BUS_BREAKER_OPEN) {
        uint64_t at = bus_breaker_recovery_at(&a->br);
        if (at != 0) {
            bus_arm(b, BUS_TIMER_BREAKER, at, a, 0, 0, a->br.transitions);
        }
    }

    bus_packbuf pb = {.len = 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &pb, bus_packbuf_write);
    msgpack_pack_map(&pk, 4);
    bus_pack_str(&pk, "agent");
    bus_pack_str(&pk, a->name);
    bus_pack_str(&pk, "from");
    bus_pack_str(&pk, from);
    bus_pack_str(&pk, "to");
    bus_pack_str(&pk, to);
    bus_pack_str(&pk, "reason");
    bus_pack_str(&pk, t->reason);
    hsb_envelope env;
    memset(&env, 0, sizeof(env));
    env.prio = HSB_PRIO_HIGH;
    snprintf(env.topic, sizeof(env.topic), "sys.breaker");
    snprintf(env.type, sizeof(env.type), "sys.breaker");
    env.body = (const uint8_t *)pb.buf;
    env.body_len = pb.len;
    bus_publish_sys(b, &env, now);
}

static void bus_record_outcome(bus *b, bus_agent *a, bool success, uint64_t now)
{
    bus_breaker_transition t;
    if (bus_breaker_record(&a->br, now, success, &t)) {
        bus_on_transition(b, a, &t, now);
    }
}

/*
 * Puts an in-flight message back for another attempt, or dead-letters or expires it. c is the
 * client it was in flight at if that client lives on (its own queue gets direct messages back).
 * Consumes the entry's reference.
 */
static void bus_redeliver(bus *b, bus_agent *a, bus_client *c, const bus_inflight_entry *e,
                          const char *reason, uint64_t now)
{
    bus_msg *m = e->msg;
    if (bus_deadline_of(m) <= now) {
        bus_expire(b, a, m, e->deliveries);
        return;
    }
    if (e->deliveries >= a->cfg.max_deliveries) {
        bus_dead_letter(b, a, m, e->deliveries, reason);
        return;
    }
    bus_prioq *q = &a->q;
    if (e->direct) {
        if (c != NULL) {
            q = &c->direct;
        } else if (bus_is_sys_error(m)) {
            b->t.sys_errors_dropped++; /* its instance is gone */
            bus_msg_unref(m);
            return;
        }
    }
    bus_prioq_entry pe = {.msg = m, .deliveries = e->deliveries};
    if (bus_prioq_put_force(q, pe, true) != HSB_OK) {
        bus_dead_letter(b, a, m, e->deliveries, "out of memory");
        return;
    }
    a->redelivered++;
    bus_note_deadline(b, a, m); /* the queue may have been empty, its sweep disarmed */
    bus_event_queue(b, "redeliver", a, m->env.id, 0, 0, reason);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

void bus_config_defaults(bus_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    bus_agent_config *a = &cfg->agent_defaults;
    a->queue_max_msgs = 10000;
    a->queue_max_bytes = 64u << 20;
    a->default_ttl_ms = 30000;
    a->ack_timeout_ms = 30000;
    a->max_deliveries = 5;
    a->breaker.failure_threshold = 5;
    a->breaker.window_ms = 10000;
    a->breaker.rate_min_calls = 20;
    a->breaker.rate_threshold_pct = 50;
    a->breaker.recovery_timeout_ms = 60000;
    a->breaker.half_open_probes = 1;
    cfg->weights[0] = 4;
    cfg->weights[1] = 2;
    cfg->weights[2] = 1;
    cfg->batch_max = 64;
    cfg->batch_linger_ms = 2;
    cfg->dedup_window_ms = 300000;
    cfg->dedup_max = 100000;
    cfg->first_id = 1;
    cfg->clock_ms = bus_system_clock;
    cfg->clock_arg = NULL;
}

static bool bus_agent_config_valid(const bus_agent_config *a)
{
    return a->queue_max_msgs > 0 && a->queue_max_bytes > 0 && a->default_ttl_ms > 0 &&
           a->ack_timeout_ms > 0 && a->max_deliveries > 0 && a->breaker.rate_threshold_pct <= 100;
}

hsb_err bus_new(const bus_config *cfg, const bus_host_ops *host_ops, void *host, bus **out)
{
    *out = NULL;
    if (cfg == NULL || host_ops == NULL || host_ops->deliver == NULL || cfg->clock_ms == NULL ||
        !bus_agent_config_valid(&cfg->agent_defaults) || cfg->weights[0] == 0 ||
        cfg->weights[1] == 0 || cfg->weights[2] == 0) {
        return HSB_EINVAL;
    }
    bus *b = calloc(1, sizeof(*b));
    if (b == NULL) {
        return HSB_ENOMEM;
    }
    b->cfg = *cfg;
    b->ops = *host_ops;
    b->host = host;
    b->next_session = 1;
    b->next_id = cfg->first_id != 0 ? cfg->first_id : 1;
    b->dests = malloc(sizeof(*b->dests));
    b->topic_agents = malloc(sizeof(*b->topic_agents));
    if (b->dests == NULL || b->topic_agents == NULL) {
        free(b->dests);
        free(b->topic_agents);
        free(b);
        return HSB_ENOMEM;
    }
    bus_idmap_init(&b->clients);
    bus_idmap_init(&b->pending);
    bus_router_init(&b->router, BUS_REPLY_MAP_MAX);
    bus_dedup_init(&b->dedup, cfg->dedup_window_ms, cfg->dedup_max);
    bus_timer_init(&b->timers);
    *out = b;
    return HSB_OK;
}

static void bus_client_free(bus_client *c)
{
    bus_prioq_fini(&c->direct);
    bus_inflight_fini(&c->inflight);
    free(c->fetches);
    free(c->handles);
    free(c->subscribes);
    free(c);
}

void bus_free(bus *b)
{
    if (b == NULL) {
        return;
    }
    for (size_t i = 0; i < b->n_agents; i++) {
        bus_agent *a = b->agents[i];
        for (size_t j = 0; j < a->n_clients; j++) {
            bus_client_free(a->clients[j]);
        }
        free(a->clients);
        bus_prioq_fini(&a->q);
        bus_batch_fini(&a->batch);
        free(a);
    }
    free(b->agents);
    free(b->dests);
    free(b->topic_agents);
    /* Pending saves: several may share one request; free it with its last one. */
    for (size_t i = 0; i < b->pending.cap; i++) {
        if (b->pending.v[i].key == 0) {
            continue;
        }
        bus_pending *p = (bus_pending *)(uintptr_t)b->pending.v[i].val;
        bus_msg_unref(p->msg);
        if (--p->req->remaining == 0) {
            free(p->req);
        }
        free(p);
    }
    bus_idmap_fini(&b->pending);
    bus_idmap_fini(&b->clients);
    bus_router_fini(&b->router);
    bus_dedup_fini(&b->dedup);
    bus_timer_fini(&b->timers);
    free(b->done);
    free(b->events);
    free(b->scratch);
    free(b);
}

void bus_set_persist(bus *b, const bus_persist_ops *ops, void *ctx)
{
    if (ops == NULL) {
        memset(&b->pops, 0, sizeof(b->pops));
        b->has_persist = false;
        return;
    }
    b->pops = *ops;
    b->pctx = ctx;
    b->has_persist = ops->save != NULL;
}

hsb_err bus_set_agent_config(bus *b, const char *name, const bus_agent_config *cfg)
{
    if (!hsb_name_valid(name, strlen(name))) {
        return HSB_EBADNAME;
    }
    if (!bus_agent_config_valid(cfg)) {
        return HSB_EINVAL;
    }
    bus_agent *a;
    hsb_err err = bus_agent_get(b, name, &a);
    if (err != HSB_OK) {
        return err;
    }
    a->cfg = *cfg;
    bus_prioq_set_limits(&a->q, cfg->queue_max_msgs, cfg->queue_max_bytes);
    for (size_t i = 0; i < a->n_clients; i++) {
        bus_prioq_set_limits(&a->clients[i]->direct, cfg->queue_max_msgs, cfg->queue_max_bytes);
    }
    bus_breaker_set_config(&a->br, &cfg->breaker);
    return HSB_OK;
}

void bus_set_batching(bus *b, uint32_t batch_max, uint32_t batch_linger_ms)
{
    b->cfg.batch_max = batch_max;
    b->cfg.batch_linger_ms = batch_linger_ms;
}

/* ---- clients ----------------------------------------------------------------------------- */

static hsb_name *bus_names_dup(const hsb_name *v, size_t n)
{
    if (n == 0) {
        return NULL;
    }
    hsb_name *c = malloc(n * sizeof(*c));
    if (c != NULL) {
        memcpy(c, v, n * sizeof(*c));
    }
    return c;
}

static void bus_client_unroute(bus *b, bus_client *c, size_t n_handles, size_t n_subscribes)
{
    for (size_t i = 0; i < n_handles; i++) {
        bus_router_del_type(&b->router, c->handles[i].s, c->agent);
    }
    for (size_t i = 0; i < n_subscribes; i++) {
        bus_router_del_topic(&b->router, c->subscribes[i].s, c->agent);
    }
}

hsb_err bus_attach(bus *b, const hsb_hello *hello, bus_client_kind kind, uint32_t mailbox,
                   void *host_ctx, bus_client **out)
{
    hsb_err err = HSB_OK;
    size_t routed_h = 0, routed_s = 0;
    *out = NULL;
    if (b->draining) {
        return HSB_ESHUTDOWN;
    }
    if (!hsb_name_valid(hello->agent, strlen(hello->agent))) {
        return HSB_EBADNAME;
    }
    for (size_t i = 0; i < hello->n_handles; i++) {
        if (!hsb_pattern_valid(hello->handles[i].s, strlen(hello->handles[i].s))) {
            return HSB_EBADNAME;
        }
    }
    for (size_t i = 0; i < hello->n_subscribes; i++) {
        if (!hsb_pattern_valid(hello->subscribes[i].s, strlen(hello->subscribes[i].s))) {
            return HSB_EBADNAME;
        }
    }
    if (kind == BUS_CLIENT_PUSH && mailbox == 0) {
        return HSB_EINVAL;
    }
    bus_agent *a;
    err = bus_agent_get(b, hello->agent, &a);
    if (err != HSB_OK) {
        return err;
    }
    bus_client *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return HSB_ENOMEM;
    }
    c->agent = a;
    c->kind = kind;
    c->mailbox = mailbox;
    c->host_ctx = host_ctx;
    bus_prioq_init(&c->direct, a->cfg.queue_max_msgs, a->cfg.queue_max_bytes, b->cfg.weights);
    bus_inflight_init(&c->inflight);
    c->handles = bus_names_dup(hello->handles, hello->n_handles);
    c->subscribes = bus_names_dup(hello->subscribes, hello->n_subscribes);
    if ((hello->n_handles > 0 && c->handles == NULL) ||
        (hello->n_subscribes > 0 && c->subscribes == NULL)) {
        err = HSB_ENOMEM;
        goto fail_client;
    }
    c->n_handles = hello->n_handles;
    c->n_subscribes = hello->n_subscribes;
    if (a->n_clients == a->cap_clients) {
        size_t ncap = a->cap_clients != 0 ? a->cap_clients * 2 : 4;
        bus_client **nv = realloc(a->clients, ncap * sizeof(*nv));
        if (nv == NULL) {
            err = HSB_ENOMEM;
            goto fail_client;
        }
        a->clients = nv;
        a->cap_clients = ncap;
    }
    for (; routed_h < c->n_handles; routed_h++) {
        err = bus_router_add_type(&b->router, c->handles[routed_h].s, a);
        if (err != HSB_OK) {
            goto fail_routes;
        }
    }
    for (; routed_s < c->n_subscribes; routed_s++) {
        err = bus_router_add_topic(&b->router, c->subscribes[routed_s].s, a);
        if (err != HSB_OK) {
            goto fail_routes;
        }
    }
    c->session = b->next_session++;
    err = bus_idmap_put(&b->clients, c->session, (uint64_t)(uintptr_t)c);
    if (err != HSB_OK) {
        goto fail_routes;
    }
    a->clients[a->n_clients++] = c;
    *out = c;
    return HSB_OK;

fail_routes:
    bus_client_unroute(b, c, routed_h, routed_s);
fail_client:
    bus_client_free(c);
    return err;
}

typedef struct bus_move_ctx {
    bus *b;
    bus_agent *a;
} bus_move_ctx;

/* remove_if callback: takes everything from a departing client's own queue; replies move to the
 * agent's shared queue, sys.error envelopes are dropped (their instance is gone). */
static bool bus_take_direct(void *arg, const bus_prioq_entry *e)
{
    bus_move_ctx *mc = arg;
    if (bus_is_sys_error(e->msg) || bus_prioq_put_force(&mc->a->q, *e, false) != HSB_OK) {
        mc->b->t.sys_errors_dropped += bus_is_sys_error(e->msg) ? 1 : 0;
        bus_msg_unref(e->msg);
    }
    return true;
}

void bus_detach(bus *b, bus_client *c)
{
    if (c == NULL) {
        return;
    }
    bus_agent *a = c->agent;
    uint64_t now = bus_now(b);
    for (size_t i = 0; i < a->n_clients; i++) {
        if (a->clients[i] == c) {
            memmove(&a->clients[i], &a->clients[i + 1], (a->n_clients - i - 1) * sizeof(c));
            a->n_clients--;
            break;
        }
    }
    bus_idmap_del(&b->clients, c->session);
    bus_client_unroute(b, c, c->n_handles, c->n_subscribes);

    bool had_inflight = bus_inflight_len(&c->inflight) > 0;
    bus_inflight_entry e;
    while (bus_inflight_pop(&c->inflight, &e)) {
        if (e.probe && a->probes_in_flight > 0) {
            a->probes_in_flight--;
        }
        bus_redeliver(b, a, NULL, &e, "detach", now);
    }
    bus_move_ctx mc = {.b = b, .a = a};
    bus_prioq_remove_if(&c->direct, bus_take_direct, &mc);
    if (had_inflight) {
        bus_record_outcome(b, a, false, now);
    }
    bus_client_free(c);
}

void *bus_client_host(const bus_client *c)
{
    return c->host_ctx;
}

const char *bus_client_agent(const bus_client *c)
{
    return c->agent->name;
}

uint64_t bus_client_session(const bus_client *c)
{
    return c->session;
}

/* ---- sending ----------------------------------------------------------------------------- */

/*
 * Queues one reference of m for destination d (on HSB_OK the reference is the queue's).
 * Applies the breaker (not to durable messages, nor to an instance's own queue), the bounds and
 * displacement, and batching.
 */
static hsb_err bus_enqueue(bus *b, const bus_dest *d, bus_msg *m, uint64_t now)
{
    bus_agent *a = d->agent;
    bus_prioq_entry e = {.msg = m, .deliveries = m->env.deliveries};
    bus_prioq_entry victims[BUS_PRIOQ_VICTIMS_MAX];
    size_t nv = 0;
    hsb_err err;

    if (d->client != NULL) {
        err = bus_prioq_put(&d->client->direct, e, 0, 0, victims, BUS_PRIOQ_VICTIMS_MAX, &nv);
        if (err != HSB_OK) {
            if (err == HSB_EBUSY) {
                a->rejected_busy++;
            }
            return err;
        }
        goto accepted;
    }
    if (!m->env.durable && !bus_breaker_admit(&a->br)) {
        a->rejected_breaker++;
        b->t.rejected_breaker++;
        return HSB_EBREAKER_OPEN;
    }
    bool batch = m->env.batch[0] != '\0' && m->env.prio != HSB_PRIO_CRITICAL &&
                 b->cfg.batch_max > 1 && b->cfg.batch_linger_ms > 0;
    if (batch) {
        if (!bus_prioq_has_room(&a->q, m->size, a->batch.held_msgs, a->batch.held_bytes)) {
            a->rejected_busy++;
            return HSB_EBUSY;
        }
        bool ready = false;
        err = bus_batch_add(&a->batch, m->env.batch, e, now, b->cfg.batch_max, &ready);
        if (err != HSB_OK) {
            return err;
        }
        if (ready) {
            bus_batch_release_key(&a->batch, m->env.batch, &a->q);
        } else {
            uint64_t due = bus_batch_next_due(&a->batch, b->cfg.batch_linger_ms);
            if (due != 0 && (a->batch_at == 0 || due < a->batch_at)) {
                a->batch_at = due;
                bus_arm(b, BUS_TIMER_BATCH, due, a, 0, 0, due);
            }
        }
        goto accepted;
    }
    err = bus_prioq_put(&a->q, e, a->batch.held_msgs, a->batch.held_bytes, victims,
                        BUS_PRIOQ_VICTIMS_MAX, &nv);
    if (err != HSB_OK) {
        if (err == HSB_EBUSY) {
            a->rejected_busy++;
        }
        return err;
    }

accepted:
    for (size_t i = 0; i < nv; i++) {
        b->t.displaced++;
        bus_event_queue(b, "displaced", a, victims[i].msg->env.id, 0, 0,
                        "queue full: displaced by a higher-priority message");
        bus_enqueue_sys_error(b, victims[i].msg, HSB_EBUSY,
                              "queue full: displaced by a higher-priority message");
        bus_msg_unref(victims[i].msg);
    }
    if (m->env.durable) {
        m->durable_dests++;
    }
    a->received++;
    bus_note_deadline(b, a, m);
    return HSB_OK;
}

/* Resolves env's destinations into b->dests; returns how many (0: no route). */
static size_t bus_resolve(bus *b, const hsb_envelope *env, uint64_t now)
{
    if (env->corr != 0) {
        uint64_t session;
        void *agent;
        /* A reply goes back to the instance that sent the request, unless it names another
         * agent in `to` (then corr is only a reference and `to` decides). */
        if (bus_router_reply_find(&b->router, env->corr, now, &session, &agent) &&
            (env->to[0] == '\0' || strcmp(env->to, ((bus_agent *)agent)->name) == 0)) {
            b->dests[0].agent = agent;
            b->dests[0].client = bus_client_by_session(b, session);
            return 1;
        }
    }
    if (env->to[0] != '\0') {
        bus_agent *a = bus_agent_find(b, env->to, NULL);
        if (a == NULL) {
            return 0;
        }
        b->dests[0] = (bus_dest){.agent = a, .client = NULL};
        return 1;
    }
    if (env->type[0] != '\0') {
        bus_agent *a = bus_router_match_type(&b->router, env->type);
        if (a != NULL) {
            b->dests[0] = (bus_dest){.agent = a, .client = NULL};
            return 1;
        }
    }
    if (env->topic[0] != '\0') {
        /* Each matching agent is distinct and known, so n <= n_agents. */
        size_t n = bus_router_match_topic(&b->router, env->topic, b->topic_agents, b->n_agents);
        if (n > b->n_agents) {
            n = b->n_agents;
        }
        for (size_t i = 0; i < n; i++) {
            b->dests[i] = (bus_dest){.agent = b->topic_agents[i], .client = NULL};
        }
        return n;
    }
    return 0;
}

/* Queues m to its n resolved destinations; the result is HSB_OK when at least one took it. */
static hsb_err bus_enqueue_all(bus *b, bus_msg *m, size_t n, uint64_t now)
{
    hsb_err first = HSB_ENOROUTE;
    size_t ok = 0;
    for (size_t i = 0; i < n; i++) {
        bus_msg_ref(m);
        hsb_err err = bus_enqueue(b, &b->dests[i], m, now);
        if (err != HSB_OK) {
            bus_msg_unref(m);
            if (first == HSB_ENOROUTE) {
                first = err;
            }
            continue;
        }
        ok++;
    }
    return ok > 0 ? HSB_OK : first;
}

static uint32_t bus_ttl_for(const bus *b, const hsb_envelope *env, size_t n)
{
    if (env->ttl_ms != 0) {
        return env->ttl_ms < HSB_TTL_MAX_MS ? env->ttl_ms : HSB_TTL_MAX_MS;
    }
    uint32_t ttl = UINT32_MAX;
    for (size_t i = 0; i < n; i++) {
        if (b->dests[i].agent->cfg.default_ttl_ms < ttl) {
            ttl = b->dests[i].agent->cfg.default_ttl_ms;
        }
    }
    return ttl != UINT32_MAX ? ttl : b->cfg.agent_defaults.default_ttl_ms;
}

static const char *bus_err_text(hsb_err err)
{
    switch (err) {
    case HSB_ENOROUTE:
        return "no agent, type or topic route matches";
    case HSB_EBUSY:
        return "destination queue full";
    case HSB_EBREAKER_OPEN:
        return "destination breaker is open";
    case HSB_EDURABLE:
        return "durable message but no persistence attached";
    case HSB_ETOOBIG:
        return "body over the size limit";
    case HSB_EBADPRIO:
        return "priority must be 0..3";
    case HSB_ESHUTDOWN:
        return "the broker is draining";
    case HSB_ENOMEM:
        return "out of memory";
    default:
        return "refused";
    }
}

static void bus_result(hsb_send_result *r, hsb_err err, uint64_t id)
{
    r->err = err;
    r->id = err == HSB_OK ? id : 0;
    r->msg = err == HSB_OK ? NULL : bus_err_text(err);
}

static void bus_count_result(bus *b, hsb_err err)
{
    if (err == HSB_OK) {
        b->t.routed++;
    } else if (err == HSB_ENOROUTE) {
        b->t.no_route++;
    } else if (err == HSB_EBUSY) {
        b->t.busy++;
    }
}

/* After acceptance: remember the cid and the sender for replies. */
static void bus_accepted(bus *b, bus_msg *m, const char *from_agent, bus_agent *from, uint64_t now)
{
    if (m->env.cid[0] != '\0') {
        (void)bus_dedup_add(&b->dedup, from_agent, m->env.cid, m->env.id, now);
    }
    if (from != NULL) {
        from->sent++;
        if (m->sender_session != 0) {
            (void)bus_router_reply_add(&b->router, m->env.id, m->sender_session, from,
                                       bus_deadline_of(m));
        }
    }
}

/*
 * bus_send_one routes one message for bus_send and bus_send_msgs: env is checked and, unless the
 * caller built the message already (adopt), copied into a new bus_msg. A durable message joins
 * *reqp, created on first need. results[i] receives the outcome.
 */
static void bus_send_one(bus *b, bus_client *from, const char *from_agent, const hsb_envelope *env,
                         bus_msg *adopt, uint64_t now, size_t i, hsb_send_result *results,
                         void *cookie, bus_send_req **reqp)
{
    uint64_t first_id;
    if (env->prio >= HSB_PRIO_COUNT) {
        bus_result(&results[i], HSB_EBADPRIO, 0);
        return;
    }
    if (env->body != NULL && env->body_len > HSB_BODY_MAX) {
        bus_result(&results[i], HSB_ETOOBIG, 0);
        return;
    }
    if (env->cid[0] != '\0' && bus_dedup_find(&b->dedup, from_agent, env->cid, now, &first_id)) {
        b->t.duplicates++;
        bus_result(&results[i], HSB_OK, first_id);
        return;
    }
    if (env->durable && !b->has_persist) {
        bus_result(&results[i], HSB_EDURABLE, 0);
        return;
    }
    size_t nd = bus_resolve(b, env, now);
    if (nd == 0) {
        b->t.no_route++;
        bus_result(&results[i], HSB_ENOROUTE, 0);
        return;
    }
    /* An adopted message gets a reference of the bus's own; the caller keeps its one. */
    bus_msg *m = adopt != NULL ? bus_msg_ref(adopt) : bus_msg_new(env);
    if (m == NULL) {
        bus_result(&results[i], HSB_ENOMEM, 0);
        return;
    }
    size_t from_len = strlen(from_agent); /* a valid name: fits, checked at attach */
    memcpy(m->env.from, from_agent, from_len + 1);
    m->env.id = b->next_id++;
    m->env.deadline = (int64_t)(now + bus_ttl_for(b, env, nd));
    m->env.deliveries = 0;
    m->enqueue_ms = now;
    m->sender_session = from != NULL ? from->session : 0;

    if (!env->durable) {
        hsb_err err = bus_enqueue_all(b, m, nd, now);
        bus_count_result(b, err);
        bus_result(&results[i], err, m->env.id);
        if (err == HSB_OK) {
            bus_accepted(b, m, from_agent, from != NULL ? from->agent : NULL, now);
        }
        bus_msg_unref(m);
        return;
    }

    /* Durable: commit first, queue when the store answers (bus_persist_done). */
    bus_send_req *req = *reqp;
    if (req == NULL) {
        req = calloc(1, sizeof(*req));
        if (req == NULL) {
            bus_result(&results[i], HSB_ENOMEM, 0);
            bus_msg_unref(m);
            return;
        }
        req->cookie = cookie;
        req->results = results;
        *reqp = req;
    }
    bus_pending *p = calloc(1, sizeof(*p));
    hsb_err err =
        p == NULL ? HSB_ENOMEM : bus_idmap_put(&b->pending, m->env.id, (uint64_t)(uintptr_t)p);
    if (err == HSB_OK) {
        err = b->pops.save(b->pctx, m, m->env.id);
        if (err != HSB_OK) {
            bus_idmap_del(&b->pending, m->env.id);
        }
    }
    if (err != HSB_OK) {
        free(p);
        bus_result(&results[i], err, 0);
        bus_msg_unref(m);
        return;
    }
    p->req = req;
    p->idx = i;
    p->msg = m;
    req->remaining++;
    results[i].err = HSB_OK;
    results[i].id = 0;
    results[i].msg = NULL;
}

/* bus_send_all is bus_send and bus_send_msgs: exactly one of envs and msgs is given. */
static hsb_err bus_send_all(bus *b, bus_client *from, const hsb_envelope *envs,
                            bus_msg *const *msgs, size_t n, hsb_send_result *results, void *cookie,
                            bool *pending)
{
    *pending = false;
    if (b->draining) {
        return HSB_ESHUTDOWN;
    }
    uint64_t now = bus_now(b);
    const char *from_agent = from != NULL ? from->agent->name : "sys";
    bus_send_req *req = NULL;

    bus_dedup_expire(&b->dedup, now);
    for (size_t i = 0; i < n; i++) {
        bus_msg *adopt = msgs != NULL ? msgs[i] : NULL;
        const hsb_envelope *env = adopt != NULL ? &adopt->env : &envs[i];
        bus_send_one(b, from, from_agent, env, adopt, now, i, results, cookie, &req);
    }
    if (req != NULL && req->remaining == 0) {
        free(req);
        req = NULL;
    }
    *pending = req != NULL;
    return HSB_OK;
}

hsb_err bus_send(bus *b, bus_client *from, const hsb_envelope *envs, size_t n,
                 hsb_send_result *results, void *cookie, bool *pending)
{
    return bus_send_all(b, from, envs, NULL, n, results, cookie, pending);
}

hsb_err bus_send_msgs(bus *b, bus_client *from, bus_msg *const *msgs, size_t n,
                      hsb_send_result *results, void *cookie, bool *pending)
{
    return bus_send_all(b, from, NULL, msgs, n, results, cookie, pending);
}

void bus_persist_done(bus *b, uint64_t token, hsb_err err)
{
    uint64_t v;
    if (!bus_idmap_get(&b->pending, token, &v)) {
        return;
    }
    bus_idmap_del(&b->pending, token);
    bus_pending *p = (bus_pending *)(uintptr_t)v;
    bus_msg *m = p->msg;
    hsb_send_result *r = &p->req->results[p->idx];
    uint64_t now = bus_now(b);

    if (err == HSB_OK) {
        size_t nd = bus_resolve(b, &m->env, now);
        err = nd == 0 ? HSB_ENOROUTE : bus_enqueue_all(b, m, nd, now);
        bus_count_result(b, err);
        if (err == HSB_OK) {
            bus_client *from = bus_client_by_session(b, m->sender_session);
            bus_accepted(b, m, m->env.from, from != NULL ? from->agent : NULL, now);
        } else if (b->pops.remove != NULL) {
            b->pops.remove(b->pctx, m->env.id); /* committed but refused: forget it */
        }
    }
    bus_result(r, err, m->env.id);
    bus_msg_unref(m);
    if (--p->req->remaining == 0) {
        if (b->n_done == b->cap_done) {
            size_t ncap = b->cap_done != 0 ? b->cap_done * 2 : 16;
            void **nv = realloc(b->done, ncap * sizeof(*nv));
            if (nv != NULL) {
                b->done = nv;
                b->cap_done = ncap;
            }
        }
        if (b->n_done < b->cap_done) {
            b->done[b->n_done++] = p->req->cookie;
        }
        free(p->req);
    }
    free(p);
}

hsb_err bus_restore(bus *b, const hsb_envelope *env)
{
    uint64_t now = bus_now(b);
    bus_agent *a = NULL;
    size_t nd;
    if (env->id == 0 || env->prio >= HSB_PRIO_COUNT) {
        return HSB_EINVAL;
    }
    if (env->to[0] != '\0') {
        hsb_err err = bus_agent_get(b, env->to, &a);
        if (err != HSB_OK) {
            return err;
        }
        b->dests[0] = (bus_dest){.agent = a, .client = NULL};
        nd = 1;
    } else {
        hsb_envelope e = *env;
        e.corr = 0; /* the sending instance is gone */
        nd = bus_resolve(b, &e, now);
        if (nd == 0) {
            return HSB_ENOROUTE;
        }
    }
    bus_msg *m = bus_msg_new(env);
    if (m == NULL) {
        return HSB_ENOMEM;
    }
    m->env.durable = true;
    m->enqueue_ms = now;
    if (env->id >= b->next_id) {
        b->next_id = env->id + 1;
    }
    for (size_t i = 0; i < nd; i++) {
        bus_agent *d = b->dests[i].agent;
        m->durable_dests++;
        bus_msg_ref(m);
        if (bus_deadline_of(m) <= now) {
            bus_expire(b, d, m, env->deliveries);
            continue;
        }
        bus_prioq_entry e = {.msg = m, .deliveries = env->deliveries};
        if (bus_prioq_put_force(&d->q, e, false) != HSB_OK) {
            m->durable_dests--;
            bus_msg_unref(m);
            bus_msg_unref(m);
            return HSB_ENOMEM;
        }
        d->received++;
        bus_note_deadline(b, d, m);
    }
    bus_msg_unref(m);
    return HSB_OK;
}

/* ---- settling ---------------------------------------------------------------------------- */

static void bus_settle_ack(bus *b, bus_client *c, const bus_inflight_entry *e, uint64_t now)
{
    bus_agent *a = c->agent;
    bus_msg *m = e->msg;
    if (e->probe && a->probes_in_flight > 0) {
        a->probes_in_flight--;
    }
    a->acked++;
    uint64_t lat_ms = now > m->enqueue_ms ? now - m->enqueue_ms : 0;
    bus_hist_record(&a->latency, lat_ms * 1000);
    /* A handler that outlives the deadline counts as a failure even though it acked. */
    bus_record_outcome(b, a, now <= bus_deadline_of(m), now);
    bus_durable_settle(b, m);
    bus_msg_unref(m);
}

void bus_ack(bus *b, bus_client *c, uint64_t id)
{
    bus_inflight_entry e;
    if (!bus_inflight_take(&c->inflight, id, &e)) {
        return;
    }
    bus_settle_ack(b, c, &e, bus_now(b));
}

void bus_nack(bus *b, bus_client *c, uint64_t id, const char *reason)
{
    bus_inflight_entry e;
    if (!bus_inflight_take(&c->inflight, id, &e)) {
        return;
    }
    bus_agent *a = c->agent;
    uint64_t now = bus_now(b);
    if (e.probe && a->probes_in_flight > 0) {
        a->probes_in_flight--;
    }
    a->nacked++;
    bus_record_outcome(b, a, false, now);
    bus_redeliver(b, a, c, &e, reason != NULL && reason[0] != '\0' ? reason : "nack", now);
}

/* ---- fetching ---------------------------------------------------------------------------- */

hsb_err bus_fetch(bus *b, bus_client *c, const hsb_fetch_req *req, void *cookie)
{
    if (c->kind != BUS_CLIENT_EXTERNAL) {
        return HSB_EINVAL;
    }
    for (size_t i = 0; i < req->n_acks; i++) {
        bus_ack(b, c, req->acks[i]);
    }
    for (size_t i = 0; i < req->n_nacks; i++) {
        bus_nack(b, c, req->nacks[i].id, req->nacks[i].reason);
    }
    if (c->n_fetches == c->cap_fetches) {
        size_t ncap = c->cap_fetches != 0 ? c->cap_fetches * 2 : 4;
        bus_fetch_park *nv = realloc(c->fetches, ncap * sizeof(*nv));
        if (nv == NULL) {
            return HSB_ENOMEM;
        }
        c->fetches = nv;
        c->cap_fetches = ncap;
    }
    uint32_t max = req->max != 0 ? req->max : BUS_FETCH_MAX_DEFAULT;
    if (max > HSB_BATCH_MAX) {
        max = HSB_BATCH_MAX;
    }
    uint64_t now = bus_now(b);
    bus_fetch_park *f = &c->fetches[c->n_fetches++];
    f->cookie = cookie;
    f->max = max;
    f->due = now + req->wait_ms;
    f->flush_seq = b->flush_seq;
    c->fetch_credit += max;
    if (req->wait_ms > 0) {
        bus_arm(b, BUS_TIMER_FETCH, f->due, NULL, c->session, 0, 0);
    }
    return HSB_OK;
}

static void bus_fetch_remove(bus_client *c, size_t i)
{
    c->fetch_credit -= c->fetches[i].max;
    memmove(&c->fetches[i], &c->fetches[i + 1], (c->n_fetches - i - 1) * sizeof(*c->fetches));
    c->n_fetches--;
}

void bus_fetch_cancel(bus *b, bus_client *c, void *cookie)
{
    (void)b;
    for (size_t i = 0; i < c->n_fetches; i++) {
        if (c->fetches[i].cookie == cookie) {
            bus_fetch_remove(c, i);
            return;
        }
    }
}

/* ---- flushing ---------------------------------------------------------------------------- */

/* Hands one batch to one instance of a. Returns true if it changed anything. */
static bool bus_deliver_one(bus *b, bus_agent *a, uint64_t now)
{
    bool shared = a->q.count > 0 && bus_breaker_may_deliver(&a->br, a->probes_in_flight);
    bus_client *c = NULL;
    uint64_t best = 0;
    size_t best_i = 0;
    for (size_t k = 0; k < a->n_clients; k++) {
        size_t i = (a->rr + k) % a->n_clients;
        bus_client *x = a->clients[i];
        uint64_t credit = bus_client_credit(x);
        if (credit == 0 || (x->direct.count == 0 && !shared)) {
            continue;
        }
        if (credit > best) {
            best = credit;
            c = x;
            best_i = i;
        }
    }
    if (c == NULL) {
        return false;
    }
    a->rr = best_i + 1;
    size_t limit = c->kind == BUS_CLIENT_PUSH ? (size_t)best : c->fetches[0].max;
    if (limit > b->cap_scratch) {
        bus_delivery *nv = realloc(b->scratch, limit * sizeof(*nv));
        if (nv == NULL) {
            return false;
        }
        b->scratch = nv;
        b->cap_scratch = limit;
    }
    size_t n = 0;
    bool changed = false;
    while (n < limit) {
        bus_prioq_entry pe;
        bool direct = true;
        bool probe = false;
        if (!bus_prioq_get(&c->direct, &pe)) {
            if (!bus_breaker_may_deliver(&a->br, a->probes_in_flight) ||
                !bus_prioq_get(&a->q, &pe)) {
                break;
            }
            direct = false;
            probe = a->br.state == BUS_BREAKER_HALF_OPEN;
        }
        changed = true;
        if (bus_deadline_of(pe.msg) <= now) {
            bus_expire(b, a, pe.msg, pe.deliveries);
            continue;
        }
        bus_inflight_entry ie = {
            .msg = pe.msg,
            .deliveries = pe.deliveries + 1,
            .ack_deadline = now + a->cfg.ack_timeout_ms,
            .direct = direct,
            .probe = probe,
        };
        if (bus_inflight_add(&c->inflight, &ie) != HSB_OK) {
            /* Out of memory (or an id already in flight here): leave it queued, and report no
             * change unless something was delivered, so that flush does not spin on it. */
            (void)bus_prioq_put_force(direct ? &c->direct : &a->q, pe, true);
            changed = false;
            break;
        }
        if (probe) {
            a->probes_in_flight++;
        }
        /* One timer per client at its earliest ack deadline, not one per message: deadlines
         * grow with delivery order, so this arms only when the table was empty. */
        if (c->ack_at == 0 || ie.ack_deadline < c->ack_at) {
            c->ack_at = ie.ack_deadline;
            bus_arm(b, BUS_TIMER_ACK, c->ack_at, NULL, c->session, 0, c->ack_at);
        }
        a->delivered++;
        /* Every delivery of a durable message is recorded, the first included: a message handed
         * out and never acked before a crash must come back with its count intact. */
        if (pe.msg->env.durable && b->has_persist && b->pops.delivered != NULL) {
            b->pops.delivered(b->pctx, pe.msg->env.id, ie.deliveries);
        }
        b->scratch[n].msg = bus_msg_ref(pe.msg);
        b->scratch[n].deliveries = ie.deliveries;
        n++;
    }
    if (n == 0) {
        return changed;
    }
    void *cookie = NULL;
    if (c->kind == BUS_CLIENT_EXTERNAL) {
        cookie = c->fetches[0].cookie;
        bus_fetch_remove(c, 0);
    }
    b->ops.deliver(b->host, c, cookie, b->scratch, n);
    return true;
}

/* Answers one parked fetch whose wait has passed, with nothing. A fetch parked from a callback of
 * this flush waits for the next one, so a host that re-fetches from its callback cannot make a
 * flush spin. */
static bool bus_answer_due_fetch(bus *b, uint64_t now)
{
    for (size_t i = 0; i < b->n_agents; i++) {
        bus_agent *a = b->agents[i];
        for (size_t j = 0; j < a->n_clients; j++) {
            bus_client *c = a->clients[j];
            for (size_t k = 0; k < c->n_fetches; k++) {
                if (c->fetches[k].due <= now &&
                    !(b->flushing && c->fetches[k].flush_seq == b->flush_seq)) {
                    void *cookie = c->fetches[k].cookie;
                    bus_fetch_remove(c, k);
                    b->ops.deliver(b->host, c, cookie, NULL, 0);
                    return true;
                }
            }
        }
    }
    return false;
}

void bus_flush(bus *b)
{
    if (b->flushing) {
        return; /* called from one of our own callbacks: the outer flush goes on */
    }
    b->flushing = true;
    b->flush_seq++;
    for (;;) {
        bool progress = false;
        /* Events first: the log should show a breaker opening before what follows from it. */
        for (size_t i = 0; i < b->n_events; i++) {
            bus_qevent q = b->events[i];
            bus_event ev = {
                .event = q.event,
                .agent = q.has_agent ? q.agent : NULL,
                .msg_id = q.msg_id,
                .from = q.from,
                .to = q.to,
                .detail = q.detail,
            };
            if (b->ops.event != NULL) {
                b->ops.event(b->host, &ev);
            }
            progress = true;
        }
        b->n_events = 0;
        for (size_t i = 0; i < b->n_done; i++) {
            void *cookie = b->done[i];
            if (b->ops.send_done != NULL) {
                b->ops.send_done(b->host, cookie);
            }
            progress = true;
        }
        b->n_done = 0;
        uint64_t now = bus_now(b);
        for (size_t i = 0; i < b->n_agents; i++) {
            while (bus_deliver_one(b, b->agents[i], now)) {
                progress = true;
            }
        }
        /* Empty answers only once nothing more can be delivered: a delivery to one agent can
         * queue a sys.error for an instance of another. */
        if (!progress && !bus_answer_due_fetch(b, now)) {
            break;
        }
    }
    b->flushing = false;
}

/* ---- timers ------------------------------------------------------------------------------ */

typedef struct bus_sweep_ctx {
    uint64_t now;
    uint64_t min; /* earliest deadline kept */
    bus_prioq_entry *dead;
    size_t n_dead;
    size_t cap_dead;
} bus_sweep_ctx;

static bool bus_sweep_take(void *arg, const bus_prioq_entry *e)
{
    bus_sweep_ctx *s = arg;
    uint64_t d = bus_deadline_of(e->msg);
    if (d > s->now) {
        if (d < s->min) {
            s->min = d;
        }
        return false;
    }
    if (s->n_dead == s->cap_dead) {
        size_t ncap = s->cap_dead != 0 ? s->cap_dead * 2 : 32;
        bus_prioq_entry *nv = realloc(s->dead, ncap * sizeof(*nv));
        if (nv == NULL) {
            if (d < s->min) {
                s->min = d; /* keep it; the next sweep comes at once */
            }
            return false;
        }
        s->dead = nv;
        s->cap_dead = ncap;
    }
    s->dead[s->n_dead++] = *e;
    return true;
}

/* Drops every expired message queued for a (shared queue, batches, instance queues). */
static void bus_sweep(bus *b, bus_agent *a, uint64_t now)
{
    bus_sweep_ctx s = {.now = now, .min = UINT64_MAX};
    bus_prioq_remove_if(&a->q, bus_sweep_take, &s);
    bus_batch_remove_if(&a->batch, bus_sweep_take, &s);
    for (size_t i = 0; i < a->n_clients; i++) {
        bus_prioq_remove_if(&a->clients[i]->direct, bus_sweep_take, &s);
    }
    /* Expiring sends sys.error envelopes into other queues: only now that the sweep is over. */
    for (size_t i = 0; i < s.n_dead; i++) {
        bus_expire(b, a, s.dead[i].msg, s.dead[i].deliveries);
    }
    free(s.dead);
    a->sweep_at = 0;
    if (s.min != UINT64_MAX) {
        a->sweep_at = s.min > now ? s.min : now + 1;
        bus_arm(b, BUS_TIMER_SWEEP, a->sweep_at, a, 0, 0, a->sweep_at);
    }
}

/* Redelivers c's in-flight messages whose ack deadline has passed, then re-arms c's ack timer at
 * the earliest deadline left. */
static void bus_ack_scan(bus *b, bus_client *c, uint64_t now)
{
    bus_agent *a = c->agent;
    uint64_t next = UINT64_MAX;
    size_t i = 0;
    c->ack_at = 0;
    while (i < c->inflight.len) {
        bus_inflight_entry *ie = &c->inflight.v[i];
        if (ie->ack_deadline > now) {
            if (ie->ack_deadline < next) {
                next = ie->ack_deadline;
            }
            i++;
            continue;
        }
        /* Taking swaps the last entry into position i, so i is not advanced. Redelivery never
         * touches this table. */
        bus_inflight_entry e;
        bus_inflight_take(&c->inflight, ie->msg->env.id, &e);
        if (e.probe && a->probes_in_flight > 0) {
            a->probes_in_flight--;
        }
        bus_record_outcome(b, a, false, now);
        bus_redeliver(b, a, c, &e, "ack_timeout", now);
    }
    if (next != UINT64_MAX) {
        c->ack_at = next;
        bus_arm(b, BUS_TIMER_ACK, next, NULL, c->session, 0, next);
    }
}

void bus_run_timers(bus *b)
{
    uint64_t now = bus_now(b);
    bus_timer_entry t;
    bus_dedup_expire(&b->dedup, now);
    while (bus_timer_pop_due(&b->timers, now, &t)) {
        switch (t.kind) {
        case BUS_TIMER_SWEEP: {
            bus_agent *a = t.obj;
            if (a->sweep_at == t.gen) {
                bus_sweep(b, a, now);
            }
            break;
        }
        case BUS_TIMER_BATCH: {
            bus_agent *a = t.obj;
            if (a->batch_at != t.gen) {
                break;
            }
            bus_batch_release_due(&a->batch, now, b->cfg.batch_linger_ms, &a->q);
            a->batch_at = bus_batch_next_due(&a->batch, b->cfg.batch_linger_ms);
            if (a->batch_at != 0) {
                if (a->batch_at <= now) {
                    a->batch_at = now + 1;
                }
                bus_arm(b, BUS_TIMER_BATCH, a->batch_at, a, 0, 0, a->batch_at);
            }
            break;
        }
        case BUS_TIMER_FETCH:
            break; /* bus_flush answers fetches whose wait has passed */
        case BUS_TIMER_ACK: {
            bus_client *c = bus_client_by_session(b, t.id);
            if (c != NULL && c->ack_at == t.gen) {
                bus_ack_scan(b, c, now);
            }
            break;
        }
        case BUS_TIMER_BREAKER: {
            bus_agent *a = t.obj;
            bus_breaker_transition tr;
            if (a->br.transitions == t.gen && bus_breaker_poll(&a->br, now, &tr)) {
                bus_on_transition(b, a, &tr, now);
            }
            break;
        }
        }
    }
}

uint64_t bus_next_timer(const bus *b)
{
    uint64_t next = bus_timer_next(&b->timers);
    /* Queued callbacks are due at once: the host should flush without sleeping. */
    if (b->n_events > 0 || b->n_done > 0) {
        uint64_t now = bus_now(b);
        if (next == 0 || now < next) {
            next = now;
        }
    }
    return next;
}

bool bus_drain(bus *b)
{
    b->draining = true;
    if (b->pending.len > 0) {
        return false;
    }
    for (size_t i = 0; i < b->n_agents; i++) {
        bus_agent *a = b->agents[i];
        for (size_t j = 0; j < a->n_clients; j++) {
            bus_client *c = a->clients[j];
            if (c->direct.count > 0 || bus_inflight_len(&c->inflight) > 0) {
                return false;
            }
        }
        if (a->n_clients > 0 && (a->q.count > 0 || a->batch.held_msgs > 0)) {
            return false;
        }
    }
    return true;
}

/* ---- operators and statistics ------------------------------------------------------------ */

hsb_err bus_breaker_force(bus *b, const char *agent, bus_breaker_action action)
{
    bus_agent *a = bus_agent_find(b, agent, NULL);
    if (a == NULL) {
        return HSB_ENOTFOUND;
    }
    uint64_t now = bus_now(b);
    bus_breaker_transition t;
    if (bus_breaker_operate(&a->br, action, now, &t)) {
        bus_on_transition(b, a, &t, now);
    } else if (b->has_persist && b->pops.audit != NULL) {
        char detail[128];
        snprintf(detail, sizeof(detail), "agent=%s action=%d state=%s", a->name, (int)action,
                 bus_breaker_state_name(a->br.state));
        b->pops.audit(b->pctx, "breaker_force", detail);
    }
    return HSB_OK;
}

const char *bus_breaker_state_name(bus_breaker_state s)
{
    switch (s) {
    case BUS_BREAKER_CLOSED:
        return "closed";
    case BUS_BREAKER_OPEN:
        return "open";
    case BUS_BREAKER_HALF_OPEN:
        return "half_open";
    default:
        return "unknown";
    }
}

static void bus_add_queue(bus_agent_stats *st, const bus_prioq *q)
{
    for (unsigned l = 0; l < HSB_PRIO_COUNT; l++) {
        st->queued[l] += bus_prioq_lane_len(q, l);
    }
    st->queued_bytes += q->bytes;
}

static void bus_agent_snapshot(const bus_agent *a, bus_agent_stats *st)
{
    memset(st, 0, sizeof(*st));
    snprintf(st->name, sizeof(st->name), "%s", a->name);
    st->instances = (uint32_t)a->n_clients;
    bus_add_queue(st, &a->q);
    for (size_t i = 0; i < a->batch.n_groups; i++) {
        const bus_batch_group *g = &a->batch.groups[i];
        for (size_t j = 0; j < g->len; j++) {
            uint8_t p = g->v[j].msg->env.prio;
            st->queued[p < HSB_PRIO_COUNT ? p : HSB_PRIO_NORMAL]++;
        }
    }
    st->queued_bytes += a->batch.held_bytes;
    for (size_t i = 0; i < a->n_clients; i++) {
        const bus_client *c = a->clients[i];
        bus_add_queue(st, &c->direct);
        st->in_flight += bus_inflight_len(&c->inflight);
        st->parked_fetches += c->n_fetches;
    }
    st->received = a->received;
    st->delivered = a->delivered;
    st->acked = a->acked;
    st->nacked = a->nacked;
    st->redelivered = a->redelivered;
    st->expired = a->expired;
    st->dead_lettered = a->dead_lettered;
    st->rejected_busy = a->rejected_busy;
    st->rejected_breaker = a->rejected_breaker;
    st->sent = a->sent;
    st->breaker = a->br.state;
    st->breaker_forced = a->br.forced;
    st->breaker_consecutive_failures = a->br.consecutive;
    st->breaker_transitions = a->br.transitions;
    st->breaker_opened_at_ms = a->br.opened_at_ms;
    st->latency = a->latency;
}

void bus_foreach_agent(const bus *b, void (*fn)(void *arg, const bus_agent_stats *st), void *arg)
{
    bus_agent_stats st;
    for (size_t i = 0; i < b->n_agents; i++) {
        bus_agent_snapshot(b->agents[i], &st);
        fn(arg, &st);
    }
}

hsb_err bus_agent_stats_get(const bus *b, const char *agent, bus_agent_stats *st)
{
    const bus_agent *a = bus_agent_find(b, agent, NULL);
    if (a == NULL) {
        return HSB_ENOTFOUND;
    }
    bus_agent_snapshot(a, st);
    return HSB_OK;
}

void bus_totals_get(const bus *b, bus_totals *t)
{
    *t = b->t;
    t->queued = 0;
    t->in_flight = 0;
    for (size_t i = 0; i < b->n_agents; i++) {
        const bus_agent *a = b->agents[i];
        t->queued += a->q.count + a->batch.held_msgs;
        for (size_t j = 0; j < a->n_clients; j++) {
            t->queued += a->clients[j]->direct.count;
            t->in_flight += bus_inflight_len(&a->clients[j]->inflight);
        }
    }
    t->clients = b->clients.len;
}
