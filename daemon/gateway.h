/*
 * daemon/gateway.h - the agent socket, agent protocol v1, on two transports.
 *
 * ipc:// (the default) is served on the loop thread by sp_ipc, which speaks nng's REQ/REP wire
 * protocol itself: a request is decoded from the connection's read buffer into a context taken
 * from a free list and handled at once, with no thread hand-off (docs/rationale.md, "The ipc
 * listener runs on the loop thread"). Past `max_contexts` such contexts, a connection waits.
 *
 * tcp:// and tls+tcp:// use an nng REP socket with many contexts. Each loops recv -> decode ->
 * (loop thread) handle -> send -> recv. Decoding happens on the nng thread that completed the
 * receive, into the context's own hsb_dec; the context itself is then posted to the loop's inbox,
 * so the decoded request crosses threads without a copy. A parked fetch holds its context, so the
 * gateway opens more contexts when fewer than `contexts` are ready to receive, up to
 * `max_contexts`.
 *
 * Either way the loop answers at once (hello, send, bye, errors) or parks the context (fetch, or a
 * send waiting for durable commits) until the bus answers through its host callbacks. Contexts
 * are freed only at shutdown, which keeps the lifecycle simple: nothing is ever freed from its own
 * callback.
 *
 * A pipe is one connection. hello binds the pipe to a bus client; every later request on that pipe
 * acts as that client; the pipe's removal detaches it (its in-flight messages are redelivered).
 *
 * Threads: gw_new, gw_start, gw_handle, gw_deliver, gw_send_done, gw_pipe_closed, gw_close and
 * gw_free run on the loop thread. The nng callbacks inside gateway.c run on nng threads and touch
 * only their own context before posting it.
 */
#ifndef HSB_DAEMON_GATEWAY_H
#define HSB_DAEMON_GATEWAY_H

#include <stdbool.h>
#include <stdint.h>

#include "bus/bus.h"
#include "daemon/config.h"
#include "daemon/inbox.h"

typedef struct gw gw;

/* Inbox item kinds the gateway posts; the server's inbox handler passes them to gw_handle. */
enum {
    GW_ITEM_REQUEST = 1, /* a gw context with a decoded request */
    GW_ITEM_PIPE_CLOSED, /* a connection went away */
};

typedef struct gw_stats {
    uint64_t requests, bad_requests, connections, open_connections, contexts, parked;
} gw_stats;

/*
 * gw_new opens the nng REP socket (NNG_OPT_RECVMAXSZ from cfg) and starts cfg->contexts receiving
 * contexts; their requests will be posted to ib (whose loop also runs the ipc listener). It does
 * not listen: gw_start does, so that the daemon can open its agent socket last, once nothing else
 * in start-up can fail. Errors: HSB_EIO (the reason is logged), HSB_ENOMEM.
 */
hsb_err gw_new(const config *cfg, bus *b, inbox *ib, gw **out);

/*
 * gw_start listens on cfg->listen (an ipc:// URL with sp_ipc, anything else with nng), and on
 * cfg->listen_tcp when set. Once one listener is open a
 * client can connect, even if the second then fails: the caller must then shut down through the
 * normal path (gw_close, gw_stop). Loop thread. Errors: HSB_EIO (the reason is logged).
 */
hsb_err gw_start(gw *g, const config *cfg);

/* gw_set_bus gives the gateway the bus (created after the gateway, or replaced). Loop thread. */
void gw_set_bus(gw *g, bus *b);

/* gw_handle handles an inbox item of kind GW_ITEM_REQUEST or GW_ITEM_PIPE_CLOSED. */
void gw_handle(gw *g, inbox_item *item);

/* gw_deliver and gw_send_done are the bus host callbacks for external clients (bus_host_ops). */
void gw_deliver(gw *g, bus_client *c, void *cookie, const bus_delivery *d, size_t n);
void gw_send_done(gw *g, void *cookie);

/* gw_set_token_check installs the per-agent token lookup used by hello (NULL: no tokens). */
typedef const char *(*gw_token_fn)(void *arg, const char *agent);
void gw_set_token_check(gw *g, gw_token_fn fn, void *arg);

/* gw_stats_get fills *st. Loop thread. */
void gw_stats_get(const gw *g, gw_stats *st);

/*
 * gw_close stops listening and answers every parked fetch with an empty reply (draining). It does
 * not wait; call gw_free after the loop has run a little so that the replies leave.
 */
void gw_close(gw *g);

/*
 * gw_stop closes the ipc listener and its connections (detaching their clients) and the nng
 * socket, and waits until no nng callback of the gateway is running (blocks briefly). The loop
 * must run once more (the handles' close callbacks) before gw_free. Contexts and pipe events may
 * still sit in the inbox: drain it (gw_handle ignores requests once stopped) before gw_free.
 */
void gw_stop(gw *g);

/* gw_free frees every context and connection of a stopped gateway, detaching their clients from
 * the bus when detach_clients (the bus outlives the gateway). NULL-safe. */
void gw_free(gw *g, bool detach_clients);

#endif /* HSB_DAEMON_GATEWAY_H */
