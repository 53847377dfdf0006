/*
 * bus/bus.h - the broker core: routing, per-agent priority queues, batching, deadlines, circuit
 * breakers, at-least-once delivery, duplicate suppression and per-agent statistics.
 *
 * The bus is pure logic. It owns no sockets, threads, timers or files: the daemon's loop thread
 * calls into it and it calls back through bus_host_ops (to hand messages to agents) and
 * bus_persist_ops (to persist durable messages, dead letters and audit events). Time comes from a
 * clock function in the config, so unit tests drive it with a fake clock.
 *
 * Threads: every function in this header must be called on the thread that owns the bus (the
 * daemon's loop thread), except bus_msg_ref/bus_msg_unref, which are atomic and may be called from
 * any thread (agent threads hold references while they handle a batch). No function here blocks,
 * and no callback is made while the bus is in an inconsistent state; callbacks are never made from
 * inside bus_send or bus_fetch (they are made from bus_flush and bus_run_timers only), so the host
 * may call into the bus again from a callback.
 *
 * Delivery model. Every connected agent instance is a bus_client. An external client receives
 * messages only through fetches it has parked (bus_fetch): its credit is the sum of their `max`.
 * A push client (a built-in agent thread) has a standing credit equal to its mailbox size; each
 * message delivered to it uses one unit until it is acked or nacked. Either way a delivered
 * message stays in flight until acked; a nack, an ack timeout or a detach puts it back in its lane
 * for redelivery, up to max_deliveries, after which it is dead-lettered.
 */
#ifndef HSB_BUS_BUS_H
#define HSB_BUS_BUS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/codec.h"
#include "proto/envelope.h"
#include "proto/err.h"

typedef struct bus bus;
typedef struct bus_client bus_client;

/* ---- messages ---------------------------------------------------------------------------- */

/*
 * A routed message: the envelope plus its own copy of the body, in one allocation, shared by
 * reference count between every queue and in-flight table that holds it (topic fan-out shares one
 * bus_msg). The envelope is immutable once the message is routed; per-destination state (delivery
 * count) lives in bus_delivery, not here.
 */
typedef struct bus_msg {
    hsb_envelope env;        /* env.body points at data[] below */
    uint64_t enqueue_ms;     /* when the broker accepted it; latency is measured from here */
    size_t size;             /* bytes charged against queue limits: sizeof + body */
    atomic_uint refs;        /* use bus_msg_ref / bus_msg_unref */
    uint64_t sender_session; /* bus: the sending instance (bus_client_session), 0 for "sys" */
    uint32_t durable_dests;  /* bus, loop thread: destinations still holding a durable message;
                                the store's copy is removed when it drops to zero */
    uint8_t data[];
} bus_msg;

/*
 * bus_msg_new copies env (and env->body) into a new message with one reference, owned by the
 * caller. Returns NULL when out of memory. Any thread.
 */
bus_msg *bus_msg_new(const hsb_envelope *env);

/* bus_msg_ref adds a reference and returns m. bus_msg_unref drops one and frees m at zero;
 * bus_msg_unref(NULL) does nothing. Any thread; atomic. */
bus_msg *bus_msg_ref(bus_msg *m);
void bus_msg_unref(bus_msg *m);

/* A message handed to an agent: the shared message and this destination's delivery count
 * (1 on first delivery). The host encodes env with deliveries taken from here. */
typedef struct bus_delivery {
    bus_msg *msg;
    uint32_t deliveries;
} bus_delivery;

/* ---- configuration ----------------------------------------------------------------------- */

typedef struct bus_breaker_config {
    uint32_t failure_threshold;   /* consecutive failures that open it; default 5; 0 = off */
    uint32_t window_ms;           /* failure-rate window; default 10000 */
    uint32_t rate_min_calls;      /* calls in the window before the rate applies; default 20 */
    uint32_t rate_threshold_pct;  /* failure rate that opens it; default 50; 0 = off */
    uint32_t recovery_timeout_ms; /* OPEN -> HALF_OPEN after this; default 60000 */
    uint32_t half_open_probes;    /* messages let through in HALF_OPEN; default 1 */
} bus_breaker_config;

/* Per-agent settings (config section [agent.NAME]); agents without a section get the defaults. */
typedef struct bus_agent_config {
    size_t queue_max_msgs;      /* default 10000 */
    size_t queue_max_bytes;     /* default 64 MiB */
    uint32_t default_ttl_ms;    /* deadline for messages without ttl_ms; default 30000 */
    uint32_t ack_timeout_ms;    /* in-flight time before redelivery; default 30000 */
    uint32_t max_deliveries;    /* then dead-letter; default 5 */
    bus_breaker_config breaker; /* see above */
} bus_agent_config;

typedef struct bus_config {
    bus_agent_config agent_defaults;
    uint32_t weights[3];      /* high:normal:low weighted round robin; default 4:2:1 */
    uint32_t batch_max;       /* flush a batch key at this many messages; default 64 */
    uint32_t batch_linger_ms; /* or after this long; default 2 */
    uint32_t dedup_window_ms; /* remember (agent, cid) this long; default 300000 */
    size_t dedup_max;         /* and at most this many entries; default 100000 */
    uint64_t first_id;        /* ids are allocated from here up; the daemon seeds it past the
                                 store's highest id so ids stay unique across restarts */
    /* Wall-clock milliseconds since the epoch. Deadlines are wall-clock on the wire. */
    uint64_t (*clock_ms)(void *arg);
    void *clock_arg;
} bus_config;

/* bus_config_defaults fills cfg with the defaults above and the system clock. */
void bus_config_defaults(bus_config *cfg);

/* ---- host and persistence interfaces ----------------------------------------------------- */

typedef enum bus_breaker_state {
    BUS_BREAKER_CLOSED = 0,
    BUS_BREAKER_OPEN,
    BUS_BREAKER_HALF_OPEN,
} bus_breaker_state;

/* Something the host should log (and count); the bus already published it where DESIGN.md says. */
typedef struct bus_event {
    const char *event;          /* "breaker", "dead_letter", "expired", "redeliver", ... */
    const char *agent;          /* the agent concerned, or NULL */
    uint64_t msg_id;            /* the message concerned, or 0 */
    bus_breaker_state from, to; /* for "breaker" */
    const char *detail;         /* short text; never a body */
} bus_event;

typedef struct bus_host_ops {
    /*
     * deliver hands n deliveries to client c. For an external client, cookie is the cookie of the
     * parked fetch being answered (n may be 0 when its wait_ms passed). For a push client cookie is
     * NULL and n >= 1. The host takes the references in d[] (it must bus_msg_unref each msg when it
     * is done encoding or handling it); d itself is only valid during the call.
     */
    void (*deliver)(void *host, bus_client *c, void *cookie, const bus_delivery *d, size_t n);

    /* send_done completes a bus_send that returned with *pending set: every entry of the results
     * array given to bus_send is now final. */
    void (*send_done)(void *host, void *cookie);

    /* event reports a notable event for the log. May be NULL. */
    void (*event)(void *host, const bus_event *ev);
} bus_host_ops;

/*
 * Persistence, implemented by the daemon's store. Every entry is called on the loop thread, must
 * not block, and takes no ownership of m (copy or encode what you need before returning). When no
 * persistence is attached, durable sends are refused with HSB_EDURABLE and dead letters are only
 * counted and reported as events.
 */
typedef struct bus_persist_ops {
    /* Commit m (durable) before its send is answered; report the result later, on the loop
     * thread, with bus_persist_done(b, token, err). Return non-HSB_OK to refuse at once. */
    hsb_err (*save)(void *ctx, const bus_msg *m, uint64_t token);
    /* m was acked (or expired, or dead-lettered): forget the durable copy. */
    void (*remove)(void *ctx, uint64_t id);
    /* A durable message was handed out again: record its delivery count. */
    void (*delivered)(void *ctx, uint64_t id, uint32_t deliveries);
    /* m failed for good: keep it with the reason and its delivery count. */
    void (*dead_letter)(void *ctx, const bus_msg *m, const char *agent, uint32_t deliveries,
                        const char *reason);
    /* Append an audit event (breaker transitions, dead-lettering). detail is key=value text. */
    void (*audit)(void *ctx, const char *event, const char *detail);
} bus_persist_ops;

/* ---- lifecycle --------------------------------------------------------------------------- */

/* bus_new creates a bus. cfg is copied. Errors: HSB_ENOMEM, HSB_EINVAL (bad config). */
hsb_err bus_new(const bus_config *cfg, const bus_host_ops *host_ops, void *host, bus **out);

/* bus_free drops every queued and in-flight message and frees the bus. Parked fetches are dropped
 * without a callback: the host answers or frees its own cookies. bus_free(NULL) does nothing. */
void bus_free(bus *b);

/* bus_set_persist attaches persistence (copied) before any traffic. */
void bus_set_persist(bus *b, const bus_persist_ops *ops, void *ctx);

/* bus_set_agent_config sets (or replaces, on reload) the settings of agent `name`. Live:
 * limits, TTL, ack timeout, max deliveries and breaker thresholds apply to what comes next. */
hsb_err bus_set_agent_config(bus *b, const char *name, const bus_agent_config *cfg);

/* bus_set_batching changes batch_max and batch_linger_ms live (reload). */
void bus_set_batching(bus *b, uint32_t batch_max, uint32_t batch_linger_ms);

/* ---- clients ----------------------------------------------------------------------------- */

typedef enum bus_client_kind {
    BUS_CLIENT_EXTERNAL = 0, /* credit from parked fetches */
    BUS_CLIENT_PUSH,         /* standing credit = mailbox size (built-in agents) */
} bus_client_kind;

/*
 * bus_attach registers an agent instance after a successful hello (the host has checked the
 * token). host_ctx is the host's per-connection object, returned by bus_client_host. For a push
 * client, mailbox is its standing credit. On HSB_OK *out is owned by the bus until bus_detach.
 * Each of hello->handles (names or "prefix.*") and hello->subscribes becomes a route to this
 * agent while at least one of its instances is attached. Errors: HSB_EBADNAME (agent, handles or
 * subscribes), HSB_EINVAL (a push client with mailbox 0), HSB_ENOMEM, HSB_ESHUTDOWN (draining).
 */
hsb_err bus_attach(bus *b, const hsb_hello *hello, bus_client_kind kind, uint32_t mailbox,
                   void *host_ctx, bus_client **out);

/*
 * bus_detach removes c. Its in-flight messages count as one breaker failure (if there were any)
 * and go back to their lanes for redelivery to other instances; its parked fetches are forgotten
 * (no callback). c is invalid afterwards.
 */
void bus_detach(bus *b, bus_client *c);

void *bus_client_host(const bus_client *c);
const char *bus_client_agent(const bus_client *c);
uint64_t bus_client_session(const bus_client *c);

/* ---- traffic ----------------------------------------------------------------------------- */

/*
 * bus_send routes n envelopes from client `from` (its agent name becomes env.from; id, deadline
 * and deliveries are set by the bus). results[i] receives each message's outcome, in order:
 * HSB_OK with the new id, or HSB_ENOROUTE, HSB_EBUSY, HSB_EBREAKER_OPEN, HSB_EEXPIRED,
 * HSB_ETOOBIG, HSB_EDURABLE, HSB_ESHUTDOWN... A repeated cid within the dedup window is answered
 * with HSB_OK and the first message's id, and is not routed again.
 *
 * Routing, first match wins: corr naming a message sent within its deadline goes back to the
 * sending instance's own queue (to its agent's queue if that instance is gone), unless `to` names
 * another agent; then `to` = a known agent (configured, attached once, or restored: its queue
 * waits for an instance until the deadline); then type (exact, then the longest "prefix.*");
 * then topic (every subscribing agent shares one message; the result is HSB_OK if at least one
 * queue took it). The deadline is now + ttl_ms, or the smallest default_ttl_ms among the
 * destinations. A destination whose breaker is OPEN refuses non-durable messages.
 *
 * When every result is final, *pending is false. When durable messages are still being committed,
 * *pending is true: results must stay valid (the caller keeps the array), the bus fills the
 * remaining entries and then calls host_ops->send_done(host, cookie). Returns HSB_OK, or
 * HSB_ENOMEM / HSB_ESHUTDOWN when the request failed as a whole (then nothing was routed).
 * from may be NULL for messages the daemon itself originates (from = "sys").
 */
hsb_err bus_send(bus *b, bus_client *from, const hsb_envelope *envs, size_t n,
                 hsb_send_result *results, void *cookie, bool *pending);

/*
 * bus_send_msgs is bus_send for messages the caller has already built with bus_msg_new (a built-in
 * agent's outbox): the bus routes msgs[i] itself instead of copying it, setting its id, from,
 * deadline and deliveries, so the caller must not have shared it with anyone. The bus takes
 * references of its own; the caller keeps (and later drops) the ones it holds, and must not change
 * the messages afterwards. Results, pending and errors as bus_send.
 */
hsb_err bus_send_msgs(bus *b, bus_client *from, bus_msg *const *msgs, size_t n,
                      hsb_send_result *results, void *cookie, bool *pending);

/*
 * bus_fetch applies req's acks and nacks for c, then parks a fetch of up to req->max messages
 * that is answered through host_ops->deliver(cookie) at the next bus_flush with messages ready,
 * or when req->wait_ms has passed (with n = 0). External clients only.
 * Fetches keep working while the bus drains, so that queued messages can still be handed out.
 * req->max of 0 means 64; more than HSB_BATCH_MAX is capped. Errors: HSB_EINVAL (a push client),
 * HSB_ENOMEM (the acks and nacks were applied, nothing was parked).
 */
hsb_err bus_fetch(bus *b, bus_client *c, const hsb_fetch_req *req, void *cookie);

/* bus_fetch_cancel forgets a parked fetch (its connection context was closed). */
void bus_fetch_cancel(bus *b, bus_client *c, void *cookie);

/*
 * bus_ack and bus_nack settle one in-flight message of c (push clients, or external ones outside a
 * fetch). An ack feeds the agent's latency histogram (enqueue -> ack) and counts as a breaker
 * success, or as a failure when it comes after the message's deadline (the handler outlived it).
 * A nack counts as a breaker failure and puts the message back at the front of its lane, or
 * dead-letters it with the reason at max_deliveries. Unknown ids are ignored (already settled).
 */
void bus_ack(bus *b, bus_client *c, uint64_t id);
void bus_nack(bus *b, bus_client *c, uint64_t id, const char *reason);

/* bus_persist_done reports the store's verdict on a save(token). Loop thread. */
void bus_persist_done(bus *b, uint64_t token, hsb_err err);

/*
 * bus_restore re-queues a durable message read back from the store at start-up, with its id,
 * lane, deadline and delivery count intact (no save is issued). A message with `to` goes to that
 * agent's queue (the agent is created if it is not known yet: agents attach after the restore);
 * one routed by type or topic needs a matching route and otherwise fails with HSB_ENOROUTE (the
 * store keeps it). An expired one is dead-lettered with reason "expired" (dead_letter, then
 * remove) and the call returns HSB_OK. Bounds and breakers do not apply. Errors: HSB_EINVAL
 * (id 0 or a bad priority), HSB_ENOROUTE, HSB_ENOMEM.
 */
hsb_err bus_restore(bus *b, const hsb_envelope *env);

/*
 * bus_flush hands ready messages to clients with credit and answers parked fetches whose wait has
 * passed. The daemon calls it once per loop iteration (uv_check); tests call it directly.
 */
void bus_flush(bus *b);

/* bus_run_timers processes everything due at the clock's now: batch linger, fetch waits, ack
 * timeouts, message deadlines, breaker recovery, dedup expiry. Then call bus_flush. */
void bus_run_timers(bus *b);

/* bus_next_timer returns the clock time (ms) of the next timer, or 0 when none is set. */
uint64_t bus_next_timer(const bus *b);

/*
 * bus_drain stops accepting new sends and attaches (HSB_ESHUTDOWN) and returns true when the bus is
 * settled: no durable save pending, nothing in flight, and nothing queued for an agent that has a
 * connected instance (messages for absent agents do not hold the drain up). The daemon keeps
 * flushing until it returns true or its drain timeout passes. May be called repeatedly.
 */
bool bus_drain(bus *b);

/* ---- operators --------------------------------------------------------------------------- */

typedef enum bus_breaker_action {
    BUS_BREAKER_FORCE_OPEN = 0, /* OPEN, no recovery timeout: held until another action */
    BUS_BREAKER_FORCE_CLOSE,    /* CLOSED, failures do not open it: held until another action */
    BUS_BREAKER_RESET,          /* CLOSED with counters cleared, forced state lifted */
} bus_breaker_action;

/* bus_breaker_force applies an operator action to agent's breaker. A change of state is logged,
 * audited and published on "sys.breaker" like any transition. While a breaker is OPEN its queued
 * messages are held (not delivered); in HALF_OPEN at most half_open_probes are in flight.
 * Errors: HSB_ENOTFOUND. */
hsb_err bus_breaker_force(bus *b, const char *agent, bus_breaker_action action);

const char *bus_breaker_state_name(bus_breaker_state s); /* "closed", "open", "half_open" */

/* Latency histogram buckets (upper bounds in microseconds), shared with /metrics. */
#define BUS_HIST_BUCKETS 16
extern const uint64_t bus_hist_bounds_us[BUS_HIST_BUCKETS];

typedef struct bus_hist {
    uint64_t counts[BUS_HIST_BUCKETS + 1]; /* last: above the highest bound (+Inf) */
    uint64_t count;
    uint64_t sum_us;
} bus_hist;

/* bus_hist_quantile estimates the q-quantile (0..1) in microseconds from the buckets. */
uint64_t bus_hist_quantile(const bus_hist *h, double q);

/* A snapshot of one agent, for hsbusctl and /metrics. */
typedef struct bus_agent_stats {
    char name[HSB_NAME_MAX + 1];
    uint32_t instances;              /* connected clients */
    uint64_t queued[HSB_PRIO_COUNT]; /* per lane */
    uint64_t queued_bytes;
    uint64_t in_flight;
    uint64_t parked_fetches;
    uint64_t received;  /* accepted for this agent */
    uint64_t delivered; /* handed out, redeliveries included */
    uint64_t acked;
    uint64_t nacked;
    uint64_t redelivered;
    uint64_t expired;
    uint64_t dead_lettered;
    uint64_t rejected_busy;
    uint64_t rejected_breaker;
    uint64_t sent; /* sent by this agent */
    bus_breaker_state breaker;
    bool breaker_forced;
    uint32_t breaker_consecutive_failures;
    uint64_t breaker_transitions;
    uint64_t breaker_opened_at_ms; /* 0 when closed */
    bus_hist latency;              /* enqueue -> ack */
} bus_agent_stats;

/* bus_foreach_agent calls fn once per known agent with a snapshot, in name order. */
void bus_foreach_agent(const bus *b, void (*fn)(void *arg, const bus_agent_stats *st), void *arg);

/* bus_agent_stats_get fills *st for one agent. Errors: HSB_ENOTFOUND. */
hsb_err bus_agent_stats_get(const bus *b, const char *agent, bus_agent_stats *st);

/* Bus-wide totals. */
typedef struct bus_totals {
    uint64_t routed, no_route, busy, expired, dead_lettered, duplicates, displaced;
    uint64_t queued, in_flight, clients;
    uint64_t rejected_breaker;   /* sends refused with E_BREAKER_OPEN */
    uint64_t sys_errors_dropped; /* sys.error envelopes whose sender was gone or full */
} bus_totals;
void bus_totals_get(const bus *b, bus_totals *t);

#endif /* HSB_BUS_BUS_H */
