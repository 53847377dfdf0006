/*
 * daemon/server.h - hsbusd's loop thread: it owns the bus, the gateway, the agent hosts, the store
 * and every libuv handle, and wires them together.
 *
 * Per loop iteration: the inbox's async callback hands posted work to its owners (requests to the
 * gateway, agent batches and store completions to the bus); the uv_check callback flushes the bus
 * (deliveries and batches leave once per iteration); the uv_prepare callback re-arms the single
 * timer to the bus's next deadline before the loop sleeps.
 *
 * Lifecycle: srv_init -> srv_run (returns on shutdown) -> srv_fini. SIGTERM and SIGINT drain
 * (stop accepting, deliver what is queued for up to drain_timeout_ms, answer parked fetches, exit
 * 0); SIGHUP reloads the config file.
 *
 * Threads: everything here runs on the thread that called srv_init (the loop thread), except where
 * a function says otherwise.
 */
#ifndef HSB_DAEMON_SERVER_H
#define HSB_DAEMON_SERVER_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "agents/host.h"
#include "bus/bus.h"
#include "daemon/config.h"
#include "daemon/dirlock.h"
#include "daemon/gateway.h"
#include "daemon/inbox.h"

/* Inbox item kinds of the server (the gateway's start at 1). */
enum {
    SRV_ITEM_AGENT_BATCH = 16, /* an agent_batch back from a worker */
    SRV_ITEM_STORE_DONE,       /* a durable save committed or failed (srv_store_done) */
    SRV_ITEM_PENDING,          /* the cookie of an agent's durable send (not posted) */
    SRV_ITEM_EXT = 32,         /* control socket and other modules: their own kinds from here */
};

typedef struct srv srv;

typedef struct srv_agent {
    srv *s;
    const config_agent *conf;
    agent_host *host;
    bus_client *client;
    void *plugin; /* dlopen handle, or NULL */
} srv_agent;

/* An extension (control socket, metrics server) gets its inbox items back through this. */
typedef void (*srv_ext_handler)(void *arg, inbox_item *item);

struct srv {
    uv_loop_t loop;
    uv_check_t check;
    uv_prepare_t prepare;
    uv_timer_t timer; /* the bus's next deadline */
    uv_timer_t drain_timer;
    uv_signal_t sig_term, sig_int, sig_hup;
    inbox ib;

    config cfg;
    const char *const *sets; /* the --set overrides, re-applied on reload */
    size_t n_sets;
    bus *bus;
    gw *gw;
    struct store *store;           /* NULL when [store] enabled = false */
    struct store_persist *persist; /* the bus's persistence adapter over the store */
    _Atomic bool inbox_closed;     /* late store completions are dropped, not posted */

    srv_agent agents[CONFIG_AGENTS_MAX];
    size_t n_agents;

    srv_ext_handler ext_handler;
    void *ext_arg;
    void *ops; /* daemon/ops.c's state: control socket, metrics server, alerts */

    bool draining;
    bool stopping;
    bool start_failed; /* srv_ops_start or gw_start failed after everything else started */
    uint64_t drain_deadline_ms;
    uint64_t start_ms;

    hsb_send_result *results; /* send results of agent outboxes, grown on demand */
    size_t results_cap;
    dirlock lock; /* run and data directories, held from srv_init to srv_fini */
};

/*
 * srv_init loads nothing: cfg is the loaded config (copied); sets (kept, not copied) are the
 * command-line overrides a reload re-applies. It creates the loop, the bus, the
 * store (and re-queues durable messages), the gateway and the built-in agents. Errors are logged;
 * returns HSB_EIO, HSB_EINVAL or HSB_ENOMEM and leaves nothing running.
 */
hsb_err srv_init(srv *s, const config *cfg, const char *const *sets, size_t n_sets);

/* srv_run runs the loop until the daemon has shut down. Returns the exit code (0 after a drain). */
int srv_run(srv *s);

/* srv_fini frees what srv_run left and closes the loop; uv_loop_close must return 0. Returns
 * false (and logs) when it does not. */
bool srv_fini(srv *s);

/* srv_begin_drain starts a graceful shutdown (what SIGTERM does). */
void srv_begin_drain(srv *s);

/* srv_reload re-reads the config file and applies what can change live; the report names the
 * keys applied and those that need a restart. Returns HSB_EINVAL (config untouched) if the file
 * is bad, with the reason in report. */
hsb_err srv_reload(srv *s, char *report, size_t len);

/* srv_set_ext_handler routes inbox items of kind >= SRV_ITEM_EXT to fn. */
void srv_set_ext_handler(srv *s, srv_ext_handler fn, void *arg);

/*
 * Operator surfaces (daemon/ops.c): the control socket, the metrics HTTP server and the alert
 * rules. srv_ops_start runs near the end of srv_init, before the agent socket listens (errors
 * abort start-up); srv_ops_ready tells systemd the daemon is up, once the agent socket listens;
 * srv_ops_stop at the start of the final shutdown phase, before the gateway closes (it must close
 * its handles with uv_close and stop its nng sockets); srv_ops_free in srv_fini. Loop thread.
 */
hsb_err srv_ops_start(srv *s);
void srv_ops_ready(srv *s);
void srv_ops_stop(srv *s);
void srv_ops_free(srv *s);

/* srv_now_ms returns wall-clock ms since the epoch. Any thread. */
uint64_t srv_now_ms(void);

#endif /* HSB_DAEMON_SERVER_H */
