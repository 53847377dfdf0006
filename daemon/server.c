/*
 * daemon/server.c - the loop thread's wiring of bus, gateway, agents and store.
 */
#include "daemon/server.h"

#include <errno.h>
#include <stdatomic.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/log.h"
#include "daemon/store/store.h"

/* The cookie of an agent's send that waits for a durable commit. */
typedef struct srv_pending {
    inbox_item item; /* kind SRV_ITEM_PENDING: tells it from a gateway context in send_done */
    srv_agent *agent;
    size_t n;
    hsb_send_result results[];
} srv_pending;

/* A durable save's verdict, travelling from the store's writer thread to the loop. */
typedef struct srv_store_done {
    inbox_item item;
    uint64_t token;
    hsb_err err;
} srv_store_done;

uint64_t srv_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Routing errors of an agent's sends are logged (an agent has no reply to read them from). msgs
 * names the messages when they are still at hand, else NULL. */
static void srv_report_send_errors(srv_agent *a, bus_msg *const *msgs, const hsb_send_result *r,
                                   size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].err != HSB_OK) {
            const hsb_envelope *e = msgs != NULL ? &msgs[i]->env : NULL;
            log_warn("agent_send_failed", "agent=%s to=%s type=%s topic=%s err=%s", a->conf->name,
                     e ? e->to : "", e ? e->type : "", e ? e->topic : "", hsb_err_name(r[i].err));
        }
    }
}

/* ---- bus host callbacks ------------------------------------------------------------------ */

static void srv_bus_deliver(void *host, bus_client *c, void *cookie, const bus_delivery *d,
                            size_t n)
{
    srv *s = host;
    if (cookie != NULL) {
        gw_deliver(s->gw, c, cookie, d, n);
        return;
    }
    srv_agent *a = bus_client_host(c);
    hsb_err err = agent_host_push(a->host, d, n);
    if (err != HSB_OK) {
        /* The host is stopping or out of memory: give the messages back for redelivery. */
        for (size_t i = 0; i < n; i++) {
            bus_nack(s->bus, c, d[i].msg->env.id, hsb_err_name(err));
            bus_msg_unref(d[i].msg);
        }
    }
}

static void srv_bus_send_done(void *host, void *cookie)
{
    srv *s = host;
    inbox_item *it = cookie;
    if (it->kind == SRV_ITEM_PENDING) {
        srv_pending *p = cookie;
        srv_report_send_errors(p->agent, NULL, p->results, p->n);
        free(p);
        return;
    }
    gw_send_done(s->gw, cookie);
}

static void srv_bus_event(void *host, const bus_event *ev)
{
    (void)host;
    if (strcmp(ev->event, "breaker") == 0) {
        log_warn("breaker", "agent=%s from=%s to=%s detail=\"%s\"", ev->agent ? ev->agent : "",
                 bus_breaker_state_name(ev->from), bus_breaker_state_name(ev->to),
                 ev->detail ? ev->detail : "");
        return;
    }
    log_info(ev->event, "agent=%s id=%" PRIu64 " detail=\"%s\"", ev->agent ? ev->agent : "",
             ev->msg_id, ev->detail ? ev->detail : "");
}

/* ---- agents ------------------------------------------------------------------------------ */

static hsb_err srv_agent_post(void *arg, agent_batch *b, bool bounded)
{
    srv *s = arg;
    inbox_item *it = (inbox_item *)(void *)b->link;
    _Static_assert(sizeof(((agent_batch *)0)->link) >= sizeof(inbox_item), "link too small");
    it->kind = SRV_ITEM_AGENT_BATCH;
    if (bounded) {
        return inbox_try_post(&s->ib, it, s->cfg.agent_inbox_limit);
    }
    inbox_post(&s->ib, it);
    return HSB_OK;
}

static void srv_agent_vlog(void *arg, hsb_log_level level, const char *agent, const char *event,
                           const char *fmt, va_list ap)
{
    (void)arg;
    char prefix[HSB_NAME_MAX + 16];
    snprintf(prefix, sizeof(prefix), "agent=%s ", agent);
    log_vwrite(level, prefix, event, fmt, ap);
}

static uint64_t srv_agent_now(void *arg)
{
    (void)arg;
    return srv_now_ms();
}

static const char *srv_agent_option(void *arg, const char *agent, const char *key)
{
    srv *s = arg;
    const config_agent *a = config_agent_find(&s->cfg, agent);
    return a != NULL ? config_agent_option(a, key) : NULL;
}

static hsb_err srv_agent_query(void *arg, const char *sql, const hsb_value *params, size_t n,
                               uint32_t ttl_ms, hsb_row_fn row, void *row_arg)
{
    srv *s = arg;
    return s->store != NULL ? store_agent_query(s->store, sql, params, n, ttl_ms, row, row_arg)
                            : HSB_EINVAL;
}

static hsb_err srv_agent_write(void *arg, const hsb_stmt *stmt, hsb_done_fn done, void *done_arg)
{
    srv *s = arg;
    return s->store != NULL ? store_agent_write(s->store, stmt, done, done_arg) : HSB_EINVAL;
}

static hsb_err srv_agent_txn(void *arg, const hsb_stmt *stmts, size_t n, hsb_done_fn done,
                             void *done_arg)
{
    srv *s = arg;
    return s->store != NULL ? store_agent_txn(s->store, stmts, n, done, done_arg) : HSB_EINVAL;
}

static hsb_err srv_agent_audit(void *arg, const char *agent, const char *event, const char *detail)
{
    srv *s = arg;
    if (s->store == NULL) {
        return HSB_EINVAL;
    }
    char d[1024];
    snprintf(d, sizeof(d), "agent=%s %s", agent, detail != NULL ? detail : "");
    return store_agent_audit(s->store, event, d);
}

/* Runs on the store's writer thread after the COMMIT: hand the verdict to the loop. */
static void srv_store_post_done(void *arg, uint64_t token, hsb_err err)
{
    srv *s = arg;
    if (atomic_load(&s->inbox_closed)) {
        log_error("store_done_late", "token=%" PRIu64 " err=%s", token, hsb_err_name(err));
        return;
    }
    srv_store_done *d = malloc(sizeof(*d));
    if (d == NULL) {
        /* The bus would wait forever for this verdict; there is no way to recover it. */
        log_error("store_done_lost", "token=%" PRIu64 " reason=ENOMEM", token);
        return;
    }
    d->item.kind = SRV_ITEM_STORE_DONE;
    d->token = token;
    d->err = err;
    inbox_post(&s->ib, &d->item);
}

static bool srv_restore_one(void *arg, const hsb_envelope *env)
{
    srv *s = arg;
    hsb_err err = bus_restore(s->bus, env);
    if (err != HSB_OK) {
        log_warn("restore_failed", "id=%" PRIu64 " err=%s", env->id, hsb_err_name(err));
    }
    return true;
}

/* srv_store_open opens the database, attaches it to the bus and re-queues durable messages. */
static hsb_err srv_store_open(srv *s)
{
    store_config sc;
    store_config_defaults(&sc);
    sc.path = s->cfg.store_path;
    sc.sync = strcmp(s->cfg.synchronous, "normal") == 0 ? STORE_SYNC_NORMAL : STORE_SYNC_FULL;
    sc.readers = s->cfg.store_readers;
    sc.cache_max_bytes = (size_t)s->cfg.cache_bytes;
    sc.cache_ttl_ms = s->cfg.cache_ttl_ms;
    hsb_err err = store_open(&sc, &s->store);
    if (err != HSB_OK) {
        log_error("store_open_failed", "path=%s err=%s", sc.path, hsb_err_name(err));
        return err;
    }
    err = store_persist_new(s->store, srv_store_post_done, s, &s->persist);
    if (err != HSB_OK) {
        return err;
    }
    log_info("store_opened", "path=%s synchronous=%s readers=%u", sc.path, s->cfg.synchronous,
             sc.readers);
    return HSB_OK;
}

/* srv_results_grow makes room for n send results in the loop's reusable array. */
static bool srv_results_grow(srv *s, size_t n)
{
    if (n <= s->results_cap) {
        return true;
    }
    hsb_send_result *r = realloc(s->results, n * sizeof(*r));
    if (r == NULL) {
        return false;
    }
    s->results = r;
    s->results_cap = n;
    return true;
}

/* An agent batch came back: settle each delivery, then route what the agent sent. */
static void srv_agent_batch(srv *s, agent_batch *b)
{
    srv_agent *a = agent_host_owner(b->host);
    for (size_t i = 0; i < b->n; i++) {
        uint64_t id = b->d[i].msg->env.id;
        if (b->results[i] == HSB_OK) {
            bus_ack(s->bus, a->client, id);
        } else {
            bus_nack(s->bus, a->client, id, hsb_err_wire(b->results[i]));
        }
    }
    if (b->n_out > 0 && srv_results_grow(s, b->n_out)) {
        bool durable = false;
        for (size_t i = 0; i < b->n_out && !durable; i++) {
            durable = b->outbox[i]->env.durable;
        }
        srv_pending *p = NULL;
        hsb_send_result *results = s->results;
        if (durable) { /* the results must outlive this call */
            p = malloc(sizeof(*p) + b->n_out * sizeof(hsb_send_result));
            if (p == NULL) {
                log_error("agent_send_failed", "agent=%s err=HSB_ENOMEM", a->conf->name);
                agent_batch_free(b);
                return;
            }
            p->item.kind = SRV_ITEM_PENDING;
            p->agent = a;
            p->n = b->n_out;
            results = p->results;
        }
        /* The outbox messages were built by the agent's host: the bus routes them as they are. */
        bool pending = false;
        hsb_err err = bus_send_msgs(s->bus, a->client, b->outbox, b->n_out, results, p, &pending);
        if (err != HSB_OK) {
            log_warn("agent_send_failed", "agent=%s n=%zu err=%s", a->conf->name, b->n_out,
                     hsb_err_name(err));
        } else if (!pending) {
            srv_report_send_errors(a, b->outbox, results, b->n_out);
        }
        if (!pending) {
            free(p);
        }
    } else if (b->n_out > 0) {
        log_error("agent_send_failed", "agent=%s n=%zu err=HSB_ENOMEM", a->conf->name, b->n_out);
    }
    agent_batch_free(b);
}

/* srv_names_split fills list from a comma-separated string. Returns the count or -1. */
static int srv_names_split(const char *csv, hsb_name *list, size_t max)
{
    size_t n = 0;
    const char *p = csv;
    while (*p != '\0') {
        while (*p == ' ' || *p == ',') {
            p++;
        }
        if (*p == '\0') {
            break;
        }
        const char *e = p;
        while (*e != '\0' && *e != ',') {
            e++;
        }
        const char *t = e;
        while (t > p && t[-1] == ' ') {
            t--;
        }
        if (n == max || (size_t)(t - p) >= sizeof(list[n].s)) {
            return -1;
        }
        memcpy(list[n].s, p, (size_t)(t - p));
        list[n].s[t - p] = '\0';
        n++;
        p = e;
    }
    return (int)n;
}

static hsb_err srv_agent_start(srv *s, const config_agent *conf)
{
    srv_agent *a = &s->agents[s->n_agents];
    memset(a, 0, sizeof(*a));
    a->s = s;
    a->conf = conf;

    const hsb_agent_ops *ops = NULL;
    bool (*known)(const char *) = NULL;
    if (conf->builtin[0] != '\0') {
        ops = agent_builtin_find(conf->builtin, &known);
        if (ops == NULL) {
            log_error("config_invalid", "agent=%s builtin=%s reason=\"no such built-in agent\"",
                      conf->name, conf->builtin);
            return HSB_EINVAL;
        }
    } else if (conf->plugin[0] != '\0') {
        char path[CONFIG_PATH_MAX * 2 + 2], err[256];
        if (conf->plugin[0] == '/') {
            snprintf(path, sizeof(path), "%s", conf->plugin);
        } else {
            snprintf(path, sizeof(path), "%s/%s", s->cfg.plugin_dir, conf->plugin);
        }
        if (agent_plugin_load(path, &ops, &a->plugin, err, sizeof(err)) != HSB_OK) {
            log_error("plugin_failed", "agent=%s path=%s reason=\"%s\"", conf->name, path, err);
            return HSB_EINVAL;
        }
    } else {
        return HSB_OK; /* an external agent's section: settings only */
    }
    if (known != NULL) {
        for (size_t i = 0; i < conf->n_opts; i++) {
            if (!known(conf->opts[i].key)) {
                log_error("config_invalid",
                          "file=%s line=%d agent=%s key=%s reason=\"unknown key\"",
                          s->cfg.file[0] ? s->cfg.file : "(embedded)", conf->opts[i].line,
                          conf->name, conf->opts[i].key);
                return HSB_EINVAL;
            }
        }
    }

    /* hello on the agent's behalf: its handles and subscribes, from config or its defaults. */
    hsb_name handles[HSB_LIST_MAX], subs[HSB_LIST_MAX];
    hsb_hello h;
    memset(&h, 0, sizeof(h));
    h.v = HSB_PROTO_VERSION;
    snprintf(h.agent, sizeof(h.agent), "%s", conf->name);
    int nh = 0, ns = 0;
    if (conf->handles[0] != '\0') {
        nh = srv_names_split(conf->handles, handles, HSB_LIST_MAX);
    } else if (ops->handles != NULL) {
        while (ops->handles[nh] != NULL && nh < HSB_LIST_MAX) {
            snprintf(handles[nh].s, sizeof(handles[nh].s), "%s", ops->handles[nh]);
            nh++;
        }
    }
    if (conf->subscribes[0] != '\0') {
        ns = srv_names_split(conf->subscribes, subs, HSB_LIST_MAX);
    } else if (ops->subscribes != NULL) {
        while (ops->subscribes[ns] != NULL && ns < HSB_LIST_MAX) {
            snprintf(subs[ns].s, sizeof(subs[ns].s), "%s", ops->subscribes[ns]);
            ns++;
        }
    }
    if (nh < 0 || ns < 0) {
        log_error("config_invalid", "agent=%s reason=\"bad handles or subscribes list\"",
                  conf->name);
        goto fail_plugin;
    }
    h.handles = handles;
    h.n_handles = (size_t)nh;
    h.subscribes = subs;
    h.n_subscribes = (size_t)ns;

    agent_host_services svc = {
        .arg = s,
        .post = srv_agent_post,
        .query = srv_agent_query,
        .write = srv_agent_write,
        .txn = srv_agent_txn,
        .audit = srv_agent_audit,
        .vlog = srv_agent_vlog,
        .now_ms = srv_agent_now,
        .option = srv_agent_option,
    };
    hsb_err err = agent_host_start(ops, conf->name, conf->workers, &svc, &a->host);
    if (err != HSB_OK) {
        log_error("agent_start_failed", "agent=%s err=%s", conf->name, hsb_err_name(err));
        goto fail_plugin;
    }
    agent_host_set_owner(a->host, a);
    err = bus_attach(s->bus, &h, BUS_CLIENT_PUSH, conf->mailbox, a, &a->client);
    if (err != HSB_OK) {
        log_error("agent_start_failed", "agent=%s err=%s", conf->name, hsb_err_name(err));
        agent_host_stop(a->host);
        agent_host_free(a->host);
        goto fail_plugin;
    }
    log_info("agent_started", "agent=%s impl=%s workers=%" PRIu32 " mailbox=%" PRIu32, conf->name,
             conf->builtin[0] ? conf->builtin : conf->plugin, conf->workers, conf->mailbox);
    s->n_agents++;
    return HSB_OK;

fail_plugin:
    agent_plugin_unload(a->plugin);
    return HSB_EINVAL;
}

static void srv_stop(srv *s);

/* ---- loop callbacks ---------------------------------------------------------------------- */

static void srv_inbox_handle(void *arg, inbox_item *item)
{
    srv *s = arg;
    switch (item->kind) {
    case GW_ITEM_REQUEST:
    case GW_ITEM_PIPE_CLOSED:
        gw_handle(s->gw, item);
        return;
    case SRV_ITEM_AGENT_BATCH:
        srv_agent_batch(s, (agent_batch *)(void *)((char *)item - offsetof(agent_batch, link)));
        return;
    case SRV_ITEM_STORE_DONE: {
        srv_store_done *d = (srv_store_done *)item;
        bus_persist_done(s->bus, d->token, d->err);
        free(d);
        return;
    }
    default:
        if (item->kind >= SRV_ITEM_EXT && s->ext_handler != NULL) {
            s->ext_handler(s->ext_arg, item);
            return;
        }
        log_error("inbox_unknown_item", "kind=%d", item->kind);
        return;
    }
}

static void srv_check_cb(uv_check_t *h)
{
    srv *s = h->data;
    if (s->bus != NULL) {
        bus_flush(s->bus);
    }
}

static void srv_timer_cb(uv_timer_t *h)
{
    srv *s = h->data;
    bus_run_timers(s->bus);
}

/* Before the loop sleeps: point the one timer at the bus's next deadline. (Loop lag is measured
 * by the operator surfaces' own timer, daemon/ops.c.) */
static void srv_prepare_cb(uv_prepare_t *h)
{
    srv *s = h->data;
    uint64_t now = srv_now_ms();
    if (s->bus == NULL) {
        return;
    }
    uint64_t next = bus_next_timer(s->bus);
    if (next == 0) {
        uv_timer_stop(&s->timer);
        return;
    }
    uv_timer_start(&s->timer, srv_timer_cb, next > now ? next - now : 0, 0);
}

static void srv_drain_tick(uv_timer_t *h)
{
    srv *s = h->data;
    bool empty = bus_drain(s->bus);
    if (empty || srv_now_ms() >= s->drain_deadline_ms) {
        bus_totals t;
        bus_totals_get(s->bus, &t);
        log_info("drain_done", "complete=%s queued=%" PRIu64 " in_flight=%" PRIu64,
                 empty ? "true" : "false", t.queued, t.in_flight);
        uv_timer_stop(h);
        srv_stop(s);
    }
}

void srv_begin_drain(srv *s)
{
    if (s->draining) {
        return;
    }
    s->draining = true;
    s->drain_deadline_ms = srv_now_ms() + s->cfg.drain_timeout_ms;
    log_info("drain_started", "timeout_ms=%" PRIu32, s->cfg.drain_timeout_ms);
    bus_drain(s->bus);
    uv_timer_start(&s->drain_timer, srv_drain_tick, 0, 20);
}

static void srv_signal_cb(uv_signal_t *h, int signum)
{
    srv *s = h->data;
    if (signum == SIGHUP) {
        char report[1024];
        if (srv_reload(s, report, sizeof(report)) != HSB_OK) {
            log_error("reload_failed", "reason=\"%s\"", report);
        }
        return;
    }
    log_info("signal", "signal=%s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    if (s->stopping) {
        return; /* already in the final phase, whose timer must not be cancelled */
    }
    if (s->draining) {
        /* A second signal: stop now. */
        uv_timer_stop(&s->drain_timer);
        srv_stop(s);
        return;
    }
    srv_begin_drain(s);
}

static void srv_close_cb(uv_handle_t *h)
{
    (void)h;
}

/* The last phase of a shutdown, after parked fetches were answered and had time to leave. */
static void srv_stop_final(uv_timer_t *h)
{
    srv *s = h->data;
    srv_ops_stop(s);
    gw_stop(s->gw);
    inbox_drain(&s->ib); /* requests are ignored now; pipe events detach clients */
    for (size_t i = 0; i < s->n_agents; i++) {
        agent_host_stop(s->agents[i].host);
    }
    inbox_drain(&s->ib); /* the workers' last batches: acks, nacks, sends (refused) */
    if (s->store != NULL) {
        /* Let the writer finish what the bus queued (removes of acked messages, saves) and hand
         * the verdicts to the bus while the inbox still works. Blocks briefly, once. */
        store_sync(s->store);
        inbox_drain(&s->ib);
    }
    atomic_store(&s->inbox_closed, true);

    uv_close((uv_handle_t *)&s->check, srv_close_cb);
    uv_close((uv_handle_t *)&s->prepare, srv_close_cb);
    uv_close((uv_handle_t *)&s->timer, srv_close_cb);
    uv_close((uv_handle_t *)&s->drain_timer, srv_close_cb);
    uv_close((uv_handle_t *)&s->sig_term, srv_close_cb);
    uv_close((uv_handle_t *)&s->sig_int, srv_close_cb);
    uv_close((uv_handle_t *)&s->sig_hup, srv_close_cb);
    inbox_close(&s->ib);
}

static void srv_stop(srv *s)
{
    if (s->stopping) {
        return;
    }
    s->stopping = true;
    gw_close(s->gw); /* parked fetches answered, new requests get E_SHUTDOWN */
    /* Give the answers a moment to leave before the socket closes. */
    uv_timer_start(&s->drain_timer, srv_stop_final, 100, 0);
}

/* ---- lifecycle --------------------------------------------------------------------------- */

/* srv_store_close closes the store after the bus is gone (no more jobs can be queued). */
static void srv_store_close(srv *s)
{
    atomic_store(&s->inbox_closed, true);
    if (s->store != NULL && store_close(s->store) != HSB_OK) {
        log_error("store_close_failed", NULL);
    }
    s->store = NULL;
    store_persist_free(s->persist);
    s->persist = NULL;
}

static hsb_err srv_mkdir(const char *path)
{
    char buf[CONFIG_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
                return HSB_EIO;
            }
            *p = '/';
        }
    }
    if (mkdir(buf, 0750) != 0 && errno != EEXIST) {
        return HSB_EIO;
    }
    return HSB_OK;
}

static const char *srv_token_of(void *arg, const char *agent)
{
    srv *s = arg;
    const config_agent *a = config_agent_find(&s->cfg, agent);
    return a != NULL ? a->token : NULL;
}

static void srv_apply_agent_configs(srv *s)
{
    for (size_t i = 0; i < s->cfg.n_agents; i++) {
        const config_agent *a = &s->cfg.agents[i];
        if (bus_set_agent_config(s->bus, a->name, &a->bus) != HSB_OK) {
            log_warn("agent_config_failed", "agent=%s", a->name);
        }
    }
}

hsb_err srv_init(srv *s, const config *cfg, const char *const *sets, size_t n_sets)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->sets = sets;
    s->n_sets = n_sets;
    s->start_ms = srv_now_ms();
    log_set_level((hsb_log_level)log_level_parse(s->cfg.log_level));
    /* The ipc listener writes to sockets whose peer may have gone: that must be an EPIPE for the
     * connection, not a SIGPIPE that kills the daemon (nng's own sends use MSG_NOSIGNAL). Before
     * any thread starts, so that every thread inherits it. */
    signal(SIGPIPE, SIG_IGN);

    if (srv_mkdir(s->cfg.run_dir) != HSB_OK || srv_mkdir(s->cfg.data_dir) != HSB_OK) {
        log_error("mkdir_failed", "run_dir=%s data_dir=%s err=\"%s\"", s->cfg.run_dir,
                  s->cfg.data_dir, strerror(errno));
        return HSB_EIO;
    }
    /* Before anything is opened: a second daemon on these directories stops here. */
    const char *dirs[] = {s->cfg.run_dir, s->cfg.data_dir};
    char why[600];
    if (dirlock_acquire(&s->lock, dirs, 2, why, sizeof(why)) != HSB_OK) {
        log_error("dir_locked", "err=\"%s\"", why);
        return HSB_EBUSY;
    }
    if (uv_loop_init(&s->loop) != 0) {
        dirlock_release(&s->lock);
        return HSB_EIO;
    }
    hsb_err err = inbox_init(&s->ib, &s->loop, srv_inbox_handle, s);
    if (err != HSB_OK) {
        goto fail_loop;
    }

    bus_host_ops host = {
        .deliver = srv_bus_deliver,
        .send_done = srv_bus_send_done,
        .event = srv_bus_event,
    };
    /* Ids stay unique across restarts: start past both the clock (ms << 16 leaves room for 65536
     * messages per ms) and the highest id the store still holds. */
    s->cfg.bus.first_id = s->start_ms << 16;
    if (s->cfg.store_enabled) {
        err = srv_store_open(s);
        if (err != HSB_OK) {
            goto fail_store;
        }
        uint64_t max_id = 0;
        if (store_durable_max_id(s->store, &max_id) == HSB_OK && max_id >= s->cfg.bus.first_id) {
            s->cfg.bus.first_id = max_id + 1;
        }
    }
    err = bus_new(&s->cfg.bus, &host, s, &s->bus);
    if (err != HSB_OK) {
        log_error("bus_failed", "err=%s", hsb_err_name(err));
        goto fail_store;
    }
    srv_apply_agent_configs(s);
    if (s->store != NULL) {
        bus_set_persist(s->bus, store_persist_ops(), s->persist);
        uint64_t bad = 0;
        bus_totals t0;
        bus_totals_get(s->bus, &t0);
        err = store_persist_load(s->store, srv_restore_one, s, &bad);
        if (err != HSB_OK) {
            log_error("restore_failed", "err=%s", hsb_err_name(err));
            goto fail_bus;
        }
        bus_totals t1;
        bus_totals_get(s->bus, &t1);
        log_info("restored", "queued=%" PRIu64 " undecodable=%" PRIu64, t1.queued - t0.queued, bad);
    }

    /* Agents first: the agent socket opens only once every agent runs (gw_start, below), so a
     * client never reaches a daemon that is about to fail its start-up. */
    for (size_t i = 0; i < s->cfg.n_agents; i++) {
        const config_agent *a = &s->cfg.agents[i];
        if (a->enabled && srv_agent_start(s, a) != HSB_OK) {
            err = HSB_EINVAL;
            goto fail_agents;
        }
    }
    err = gw_new(&s->cfg, s->bus, &s->ib, &s->gw);
    if (err != HSB_OK) {
        goto fail_agents;
    }
    gw_set_token_check(s->gw, srv_token_of, s);

    uv_check_init(&s->loop, &s->check);
    s->check.data = s;
    uv_check_start(&s->check, srv_check_cb);
    uv_prepare_init(&s->loop, &s->prepare);
    s->prepare.data = s;
    uv_prepare_start(&s->prepare, srv_prepare_cb);
    uv_timer_init(&s->loop, &s->timer);
    s->timer.data = s;
    uv_timer_init(&s->loop, &s->drain_timer);
    s->drain_timer.data = s;
    uv_signal_init(&s->loop, &s->sig_term);
    uv_signal_init(&s->loop, &s->sig_int);
    uv_signal_init(&s->loop, &s->sig_hup);
    s->sig_term.data = s->sig_int.data = s->sig_hup.data = s;
    uv_signal_start(&s->sig_term, srv_signal_cb, SIGTERM);
    uv_signal_start(&s->sig_int, srv_signal_cb, SIGINT);
    uv_signal_start(&s->sig_hup, srv_signal_cb, SIGHUP);

    /* The agent socket opens last, after the operator surfaces: a metrics port in use must stop
     * start-up before any client can connect (and be told E_SHUTDOWN at its hello). */
    err = srv_ops_start(s);
    if (err != HSB_OK) {
        log_error("ops_failed", "err=%s", hsb_err_name(err));
    } else {
        err = gw_start(s->gw, &s->cfg);
    }
    if (err != HSB_OK) {
        /* Everything is running: take the normal shutdown path, then report failure. */
        s->start_failed = true;
        srv_stop(s);
        return HSB_OK;
    }
    srv_ops_ready(s);

    log_info("started", "version=%s listen=%s agents=%zu pid=%ld", HSB_VERSION, s->cfg.listen,
             s->n_agents, (long)getpid());
    return HSB_OK;

fail_agents:
    for (size_t i = 0; i < s->n_agents; i++) {
        agent_host_stop(s->agents[i].host);
    }
    inbox_drain(&s->ib); /* batches the workers posted (none is expected this early) */
    for (size_t i = 0; i < s->n_agents; i++) {
        bus_detach(s->bus, s->agents[i].client);
        agent_host_free(s->agents[i].host);
        agent_plugin_unload(s->agents[i].plugin);
    }
    s->n_agents = 0;
fail_bus:
    bus_free(s->bus);
    s->bus = NULL;
fail_store:
    srv_store_close(s);
    inbox_close(&s->ib);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    inbox_fini(&s->ib);
fail_loop:
    uv_loop_close(&s->loop);
    dirlock_release(&s->lock);
    return err;
}

int srv_run(srv *s)
{
    uv_run(&s->loop, UV_RUN_DEFAULT);
    return s->start_failed ? 1 : 0;
}

bool srv_fini(srv *s)
{
    srv_ops_free(s);
    gw_free(s->gw, true);
    s->gw = NULL;
    for (size_t i = 0; i < s->n_agents; i++) {
        bus_detach(s->bus, s->agents[i].client);
        agent_host_free(s->agents[i].host);
        agent_plugin_unload(s->agents[i].plugin);
    }
    s->n_agents = 0;
    bus_free(s->bus);
    s->bus = NULL;
    srv_store_close(s);
    inbox_fini(&s->ib);
    free(s->results);
    int rc = uv_loop_close(&s->loop);
    if (rc != 0) {
        log_error("loop_close_failed", "err=%s", uv_err_name(rc));
        dirlock_release(&s->lock);
        return false;
    }
    log_info("stopped", NULL);
    dirlock_release(&s->lock); /* last: the next daemon may start once this one is gone */
    return true;
}

hsb_err srv_reload(srv *s, char *report, size_t len)
{
    config next;
    char err[512];
    if (config_load(&next, s->cfg.file, s->sets, s->n_sets, err, sizeof(err)) != HSB_OK) {
        snprintf(report, len, "%s", err);
        return HSB_EINVAL;
    }
    char live[512], restart[512];
    config_diff(&s->cfg, &next, live, sizeof(live), restart, sizeof(restart));

    /* Apply the live keys. */
    snprintf(s->cfg.log_level, sizeof(s->cfg.log_level), "%s", next.log_level);
    log_set_level((hsb_log_level)log_level_parse(next.log_level));
    s->cfg.drain_timeout_ms = next.drain_timeout_ms;
    s->cfg.bus.batch_max = next.bus.batch_max;
    s->cfg.bus.batch_linger_ms = next.bus.batch_linger_ms;
    bus_set_batching(s->bus, next.bus.batch_max, next.bus.batch_linger_ms);
    s->cfg.bus.agent_defaults = next.bus.agent_defaults;
    s->cfg.cache_bytes = next.cache_bytes;
    s->cfg.cache_ttl_ms = next.cache_ttl_ms;
    s->cfg.alert_p99_ms = next.alert_p99_ms;
    s->cfg.alert_error_pct = next.alert_error_pct;
    s->cfg.alert_queue_depth = next.alert_queue_depth;
    s->cfg.alert_rss_bytes = next.alert_rss_bytes;
    s->cfg.alert_for_ms = next.alert_for_ms;
    s->cfg.alert_interval_ms = next.alert_interval_ms;
    s->cfg.health_loop_lag_ms = next.health_loop_lag_ms;
    for (size_t i = 0; i < next.n_agents; i++) {
        config_agent *cur = NULL;
        for (size_t j = 0; j < s->cfg.n_agents; j++) {
            if (strcmp(s->cfg.agents[j].name, next.agents[i].name) == 0) {
                cur = &s->cfg.agents[j];
            }
        }
        if (cur == NULL) {
            continue; /* a new agent needs a restart (reported) */
        }
        cur->bus = next.agents[i].bus;
        memcpy(cur->token, next.agents[i].token, sizeof(cur->token));
        memcpy(cur->opts, next.agents[i].opts, sizeof(cur->opts));
        cur->n_opts = next.agents[i].n_opts;
    }
    srv_apply_agent_configs(s);
    snprintf(report, len, "applied=%s restart_needed=%s", live[0] ? live : "-",
             restart[0] ? restart : "-");
    log_info("reloaded", "file=%s applied=%s restart_needed=%s", s->cfg.file[0] ? s->cfg.file : "-",
             live[0] ? live : "-", restart[0] ? restart : "-");
    return HSB_OK;
}

void srv_set_ext_handler(srv *s, srv_ext_handler fn, void *arg)
{
    s->ext_handler = fn;
    s->ext_arg = arg;
}
