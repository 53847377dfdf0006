/*
 * daemon/config.c - the key table, the INI parser callbacks and the reload diff.
 *
 * Why a table: the same list must drive parsing, defaults, validation, the documented example
 * file and the live/restart split of a reload. Written once, those five cannot drift apart.
 */
#include "daemon/config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/log.h"

typedef enum config_type {
    CONFIG_STR,
    CONFIG_U32,
    CONFIG_U64,
    CONFIG_BOOL,
    CONFIG_LEVEL, /* log level name */
    CONFIG_SYNC,  /* "full" | "normal" */
} config_type;

/* Where a key's value lives: in the config, in an agent section, or in a bus_agent_config (which
 * is [bus]'s defaults or an agent's own). */
typedef enum config_scope {
    CONFIG_SCOPE_MAIN,
    CONFIG_SCOPE_AGENT,
    CONFIG_SCOPE_AGENT_BUS,
} config_scope;

typedef struct config_key {
    const char *section; /* "daemon", ..., or "agent" for [agent.NAME] */
    const char *name;
    config_type type;
    config_scope scope;
    size_t off;
    size_t size; /* for strings */
    const char *def;
    uint64_t min, max; /* numbers */
    bool live;         /* applied by a reload without restart */
    const char *doc;
} config_key;

#define MAIN(sec, name, type, field, def, min, max, live, doc)                                     \
    {                                                                                              \
        sec, name, type, CONFIG_SCOPE_MAIN, offsetof(config, field), sizeof(((config *)0)->field), \
            def, min, max, live, doc                                                               \
    }
#define AGENT(name, type, field, def, min, max, live, doc)                                         \
    {                                                                                              \
        "agent", name, type, CONFIG_SCOPE_AGENT, offsetof(config_agent, field),                    \
            sizeof(((config_agent *)0)->field), def, min, max, live, doc                           \
    }
#define ABUS(name, field, def, min, max, doc)                                                      \
    {                                                                                              \
        "bus", name, CONFIG_U64, CONFIG_SCOPE_AGENT_BUS, offsetof(bus_agent_config, field),        \
            sizeof(((bus_agent_config *)0)->field), def, min, max, true, doc                       \
    }

#define U32MAX 4294967295u

static const config_key config_keys[] = {
    MAIN("daemon", "run_dir", CONFIG_STR, run_dir, "run", 0, 0, false,
         "Directory for the sockets (agents.sock, control.sock)."),
    MAIN("daemon", "data_dir", CONFIG_STR, data_dir, "var", 0, 0, false,
         "Directory for the database."),
    MAIN("daemon", "plugin_dir", CONFIG_STR, plugin_dir, "plugins", 0, 0, false,
         "Directory searched for agent plugins (.so)."),
    MAIN("daemon", "log_level", CONFIG_LEVEL, log_level, "info", 0, 0, true,
         "Lowest level logged: debug, info, warn, error."),
    MAIN("daemon", "drain_timeout_ms", CONFIG_U32, drain_timeout_ms, "10000", 0, 600000, true,
         "On SIGTERM, how long to keep delivering queued messages before exiting."),
    MAIN("daemon", "agent_inbox_limit", CONFIG_U32, agent_inbox_limit, "65536", 16, 16777216, false,
         "Agent sends queued towards the loop before agents get E_BUSY."),

    MAIN("gateway", "listen", CONFIG_STR, listen, "", 0, 0, false,
         "Agent socket URL; empty means ipc://<run_dir>/agents.sock."),
    MAIN("gateway", "listen_tcp", CONFIG_STR, listen_tcp, "", 0, 0, false,
         "Optional second listener, e.g. tcp://127.0.0.1:7400; empty for none."),
    MAIN("gateway", "contexts", CONFIG_U32, contexts, "64", 1, 65536, false,
         "tcp/tls: nng contexts kept ready to receive (ipc takes one per request)."),
    MAIN("gateway", "max_contexts", CONFIG_U32, max_contexts, "16384", 1, 1048576, false,
         "Contexts in all, per transport; each parked fetch holds one."),
    MAIN("gateway", "max_request", CONFIG_U32, max_request, "67108864", 1024, U32MAX, false,
         "Largest request; a larger one closes its connection. Bytes."),
    MAIN("gateway", "max_body", CONFIG_U32, max_body, "1048576", 16, 268435456, false,
         "Largest message body (encoded msgpack), bytes."),

    MAIN("bus", "batch_max", CONFIG_U32, bus.batch_max, "64", 1, 1024, true,
         "A batch key is delivered when this many messages are queued..."),
    MAIN("bus", "batch_linger_ms", CONFIG_U32, bus.batch_linger_ms, "2", 0, 60000, true,
         "...or when its first message has waited this long."),
    MAIN("bus", "weight_high", CONFIG_U32, bus.weights[0], "4", 1, 1000, false,
         "Weighted round robin between the high, normal and low lanes (critical always first)."),
    MAIN("bus", "weight_normal", CONFIG_U32, bus.weights[1], "2", 1, 1000, false,
         "See weight_high."),
    MAIN("bus", "weight_low", CONFIG_U32, bus.weights[2], "1", 1, 1000, false, "See weight_high."),
    MAIN("bus", "dedup_window_ms", CONFIG_U32, bus.dedup_window_ms, "300000", 0, 86400000, false,
         "How long a sender's cid is remembered to drop duplicate sends."),
    MAIN("bus", "dedup_max", CONFIG_U64, bus.dedup_max, "100000", 0, 100000000, false,
         "At most this many remembered cids."),
    ABUS("queue_max_msgs", queue_max_msgs, "10000", 1, 100000000,
         "Per-agent queue bound in messages (also settable per [agent.NAME])."),
    ABUS("queue_max_bytes", queue_max_bytes, "67108864", 1024, 1ull << 40,
         "Per-agent queue bound in bytes."),
    ABUS("default_ttl_ms", default_ttl_ms, "30000", 1, 604800000,
         "Deadline of messages sent without ttl_ms."),
    ABUS("ack_timeout_ms", ack_timeout_ms, "30000", 1, 3600000,
         "A fetched message not acked within this is redelivered."),
    ABUS("max_deliveries", max_deliveries, "5", 1, 1000,
         "Delivery attempts before a message is dead-lettered."),
    ABUS("breaker_failure_threshold", breaker.failure_threshold, "5", 0, 1000000,
         "Consecutive failures that open an agent's breaker (0 = off)."),
    ABUS("breaker_window_ms", breaker.window_ms, "10000", 100, 3600000,
         "Window of the failure-rate rule."),
    ABUS("breaker_rate_min_calls", breaker.rate_min_calls, "20", 1, 1000000,
         "Calls in the window before the rate rule applies."),
    ABUS("breaker_rate_threshold_pct", breaker.rate_threshold_pct, "50", 0, 100,
         "Failure rate that opens the breaker (0 = off)."),
    ABUS("breaker_recovery_timeout_ms", breaker.recovery_timeout_ms, "60000", 1, 86400000,
         "How long a breaker stays open before letting probes through."),
    ABUS("breaker_half_open_probes", breaker.half_open_probes, "1", 1, 1000,
         "Messages let through while half-open."),

    MAIN("store", "enabled", CONFIG_BOOL, store_enabled, "true", 0, 0, false,
         "Keep durable messages, dead letters and the audit trail in SQLite."),
    MAIN("store", "path", CONFIG_STR, store_path, "", 0, 0, false,
         "Database file; empty means <data_dir>/hsbus.db."),
    MAIN("store", "synchronous", CONFIG_SYNC, synchronous, "full", 0, 0, false,
         "full: a committed write survives power loss; normal: it survives a process crash."),
    MAIN("store", "readers", CONFIG_U32, store_readers, "2", 1, 64, false,
         "Reader connections in the pool."),
    MAIN("store", "cache_bytes", CONFIG_U64, cache_bytes, "67108864", 0, 1ull << 40, true,
         "Query cache bound in bytes (LRU); 0 turns the cache off."),
    MAIN("store", "cache_ttl_ms", CONFIG_U32, cache_ttl_ms, "300000", 0, 86400000, true,
         "Default time to live of a cached query result."),

    MAIN("control", "enabled", CONFIG_BOOL, control_enabled, "true", 0, 0, false,
         "Serve the control socket for hsbusctl."),
    MAIN("control", "listen", CONFIG_STR, control_listen, "", 0, 0, false,
         "Control socket URL; empty means ipc://<run_dir>/control.sock (mode 0600)."),

    MAIN("metrics", "enabled", CONFIG_BOOL, metrics_enabled, "true", 0, 0, false,
         "Serve /metrics and /healthz over HTTP."),
    MAIN("metrics", "bind", CONFIG_STR, metrics_bind, "127.0.0.1", 0, 0, false,
         "Address the metrics server binds."),
    MAIN("metrics", "port", CONFIG_U32, metrics_port, "9464", 0, 65535, false,
         "Port of the metrics server (0 picks a free one and logs it)."),

    MAIN("alerts", "p99_ms", CONFIG_U32, alert_p99_ms, "250", 0, U32MAX, true,
         "Fire when an agent's p99 latency is above this (0 = off)."),
    MAIN("alerts", "error_pct", CONFIG_U32, alert_error_pct, "10", 0, 100, true,
         "Fire when an agent's share of failed deliveries is above this (0 = off)."),
    MAIN("alerts", "queue_depth", CONFIG_U32, alert_queue_depth, "8000", 0, U32MAX, true,
         "Fire when an agent's queue holds more messages than this (0 = off)."),
    MAIN("alerts", "rss_bytes", CONFIG_U64, alert_rss_bytes, "2147483648", 0, 1ull << 48, true,
         "Fire when the daemon's resident memory is above this (0 = off)."),
    MAIN("alerts", "for_ms", CONFIG_U32, alert_for_ms, "30000", 0, 86400000, true,
         "How long a condition must hold before its alert fires."),
    MAIN("alerts", "interval_ms", CONFIG_U32, alert_interval_ms, "1000", 100, 3600000, true,
         "How often the rules are evaluated."),
    MAIN("alerts", "loop_lag_ms", CONFIG_U32, health_loop_lag_ms, "500", 1, 600000, true,
         "/healthz fails when the event loop lags more than this."),

    AGENT("builtin", CONFIG_STR, builtin, "", 0, 0, false,
          "Built-in implementation: echo. Empty for an external agent or a plugin."),
    AGENT("plugin", CONFIG_STR, plugin, "", 0, 0, false,
          "Shared object in plugin_dir that exports hsb_agent_entry."),
    AGENT("token", CONFIG_STR, token, "", 0, 0, true,
          "When set, an external agent's hello must carry this token."),
    AGENT("enabled", CONFIG_BOOL, enabled, "true", 0, 0, false, "Start this agent."),
    AGENT("workers", CONFIG_U32, workers, "1", 1, 256, false, "Threads of a built-in agent."),
    AGENT("mailbox", CONFIG_U32, mailbox, "256", 1, 1000000, false,
          "Messages a built-in agent may hold at once (its credit)."),
    AGENT("handles", CONFIG_STR, handles, "", 0, 0, false,
          "Comma-separated types (or prefix.*) this agent handles; overrides its defaults."),
    AGENT("subscribes", CONFIG_STR, subscribes, "", 0, 0, false,
          "Comma-separated topics this agent subscribes to."),
};

#define CONFIG_NKEYS (sizeof(config_keys) / sizeof(config_keys[0]))

/* The embedded defaults: an echo agent so that a bare `hsbusd` can show a round trip. */
static const char config_embedded[] = "[agent.echo]\n"
                                      "builtin = echo\n";

/* Parser state: which agent keys were set explicitly, so [bus] defaults fill the rest. */
typedef struct config_parse {
    config *cfg;
    const char *file;
    char *err;
    size_t errlen;
    bool failed;
    bool agent_bus_set[CONFIG_AGENTS_MAX][CONFIG_NKEYS];
} config_parse;

static void *config_field(config *cfg, config_agent *a, const config_key *k)
{
    switch (k->scope) {
    case CONFIG_SCOPE_MAIN:
        return (char *)cfg + k->off;
    case CONFIG_SCOPE_AGENT:
        return (char *)a + k->off;
    case CONFIG_SCOPE_AGENT_BUS:
        return (char *)(a != NULL ? &a->bus : &cfg->bus.agent_defaults) + k->off;
    }
    return NULL;
}

static bool config_parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) {
        *out = true;
        return true;
    }
    if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) {
        *out = false;
        return true;
    }
    return false;
}

/* config_set stores value into the field of k. Returns an error text or NULL. */
static const char *config_set(config *cfg, config_agent *a, const config_key *k, const char *v)
{
    void *f = config_field(cfg, a, k);
    switch (k->type) {
    case CONFIG_STR:
        if (strlen(v) >= k->size) {
            return "value too long";
        }
        memcpy(f, v, strlen(v) + 1);
        return NULL;
    case CONFIG_LEVEL:
        if (log_level_parse(v) < 0) {
            return "must be debug, info, warn or error";
        }
        snprintf(f, k->size, "%s", v);
        return NULL;
    case CONFIG_SYNC:
        if (strcmp(v, "full") != 0 && strcmp(v, "normal") != 0) {
            return "must be full or normal";
        }
        snprintf(f, k->size, "%s", v);
        return NULL;
    case CONFIG_BOOL: {
        bool b;
        if (!config_parse_bool(v, &b)) {
            return "must be true or false";
        }
        *(bool *)f = b;
        return NULL;
    }
    case CONFIG_U32:
    case CONFIG_U64: {
        if (v[0] == '\0' || v[0] == '-' || v[0] == '+') {
            return "must be a non-negative integer";
        }
        errno = 0;
        char *end;
        unsigned long long n = strtoull(v, &end, 10);
        if (errno != 0 || *end != '\0') {
            return "must be a non-negative integer";
        }
        if (n < k->min || (k->max != 0 && n > k->max)) {
            return "out of range";
        }
        /* The field's size decides the store (bus_agent_config mixes widths). */
        if (k->size == sizeof(uint32_t)) {
            if (n > U32MAX) {
                return "out of range";
            }
            *(uint32_t *)f = (uint32_t)n;
        } else if (k->size == sizeof(uint64_t)) {
            *(uint64_t *)f = (uint64_t)n;
        } else {
            return "internal: bad field size";
        }
        return NULL;
    }
    }
    return "internal: bad type";
}

static config_agent *config_agent_get(config_parse *p, const char *name, int line)
{
    config *cfg = p->cfg;
    for (size_t i = 0; i < cfg->n_agents; i++) {
        if (strcmp(cfg->agents[i].name, name) == 0) {
            return &cfg->agents[i];
        }
    }
    if (cfg->n_agents == CONFIG_AGENTS_MAX) {
        return NULL;
    }
    config_agent *a = &cfg->agents[cfg->n_agents++];
    memset(a, 0, sizeof(*a));
    snprintf(a->name, sizeof(a->name), "%s", name);
    a->line = line;
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (k->scope == CONFIG_SCOPE_AGENT) {
            const char *e = config_set(cfg, a, k, k->def);
            (void)e; /* The defaults are valid by construction (tested). */
        }
    }
    return a;
}

static void config_fail(config_parse *p, int line, const char *section, const char *key,
                        const char *what)
{
    if (!p->failed) {
        snprintf(p->err, p->errlen, "%s:%d: [%s] %s: %s", p->file, line, section, key, what);
        p->failed = true;
    }
}

/*
 * Debian's libinih is built without line numbers in the handler (INI_HANDLER_LINENO = 0), so the
 * parse reads through config_read, which counts lines: inih asks for one line per call.
 */
typedef struct config_reader {
    FILE *f;         /* or */
    const char *str; /* the embedded text, consumed as it is read */
    int line;
    config_parse *p; /* section headers are reported here (see config_read_section) */
} config_reader;

static int config_ini_line_cb(void *user, const char *section, const char *name, const char *value,
                              int line);

/*
 * inih reports a section only through its keys, so a section without keys would be lost:
 * "[agent.lab]" alone must still declare the agent (with the defaults). The reader sees every
 * line, so it reports section headers itself.
 */
static void config_read_section(config_reader *r, const char *line)
{
    while (*line == ' ' || *line == '\t') {
        line++;
    }
    const char *end = line[0] == '[' ? strchr(line, ']') : NULL;
    if (end == NULL || r->p == NULL) {
        return;
    }
    char section[128];
    const char *b = line + 1;
    while (*b == ' ' || *b == '\t') {
        b++;
    }
    const char *e = end;
    while (e > b && (e[-1] == ' ' || e[-1] == '\t')) {
        e--;
    }
    if ((size_t)(e - b) >= sizeof(section)) {
        return; /* inih reports the overlong header itself */
    }
    memcpy(section, b, (size_t)(e - b));
    section[e - b] = '\0';
    (void)config_ini_line_cb(r->p, section, NULL, NULL, r->line);
}

static char *config_read(char *buf, int size, void *arg)
{
    config_reader *r = arg;
    char *out;
    if (r->f != NULL) {
        out = fgets(buf, size, r->f);
    } else {
        if (*r->str == '\0') {
            return NULL;
        }
        const char *nl = strchr(r->str, '\n');
        size_t n = nl != NULL ? (size_t)(nl - r->str) + 1 : strlen(r->str);
        if (n > (size_t)size - 1) {
            n = (size_t)size - 1;
        }
        memcpy(buf, r->str, n);
        buf[n] = '\0';
        r->str += n;
        out = buf;
    }
    if (out != NULL) {
        r->line++;
        config_read_section(r, out);
    }
    return out;
}

static config_reader *config_cur_reader;

static int config_ini_cb(void *user, const char *section, const char *name, const char *value)
{
    return config_ini_line_cb(user, section, name, value,
                              config_cur_reader != NULL ? config_cur_reader->line : 0);
}

static int config_ini_line_cb(void *user, const char *section, const char *name, const char *value,
                              int line)
{
    config_parse *p = user;
    config *cfg = p->cfg;
    config_agent *a = NULL;
    const char *sec = section;

    if (strncmp(section, "agent.", 6) == 0) {
        const char *aname = section + 6;
        if (!hsb_name_valid(aname, strlen(aname))) {
            config_fail(p, line, section, name ? name : "",
                        "agent name must match [a-z0-9._-]{1,64}");
            return 0;
        }
        a = config_agent_get(p, aname, line);
        if (a == NULL) {
            config_fail(p, line, section, name ? name : "", "too many agents");
            return 0;
        }
        sec = "agent";
    }
    if (name == NULL) { /* section start (INI_CALL_HANDLER_ON_NEW_SECTION) */
        return 1;
    }
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const config_key *k = &config_keys[i];
        bool match_sec =
            strcmp(k->section, sec) == 0 || (a != NULL && k->scope == CONFIG_SCOPE_AGENT_BUS);
        if (!match_sec || strcmp(k->name, name) != 0) {
            continue;
        }
        const char *e = config_set(cfg, a, k, value);
        if (e != NULL) {
            config_fail(p, line, section, name, e);
            return 0;
        }
        if (a != NULL && k->scope == CONFIG_SCOPE_AGENT_BUS) {
            p->agent_bus_set[a - cfg->agents][i] = true;
        }
        return 1;
    }
    if (a != NULL) { /* the agent's own option, checked by the agent at init */
        if (a->n_opts == CONFIG_OPTS_MAX) {
            config_fail(p, line, section, name, "too many options");
            return 0;
        }
        config_opt *o = &a->opts[a->n_opts++];
        if (strlen(name) >= sizeof(o->key) || strlen(value) >= sizeof(o->value)) {
            config_fail(p, line, section, name, "option too long");
            return 0;
        }
        snprintf(o->key, sizeof(o->key), "%s", name);
        snprintf(o->value, sizeof(o->value), "%s", value);
        o->line = line;
        return 1;
    }
    config_fail(p, line, section, name, "unknown key");
    return 0;
}

void config_resolve(config *cfg)
{
    if (cfg->listen[0] == '\0') {
        snprintf(cfg->listen, sizeof(cfg->listen), "ipc://%.*s/agents.sock",
                 (int)sizeof(cfg->listen) - 24, cfg->run_dir);
    }
    if (cfg->control_listen[0] == '\0') {
        snprintf(cfg->control_listen, sizeof(cfg->control_listen), "ipc://%.*s/control.sock",
                 (int)sizeof(cfg->control_listen) - 24, cfg->run_dir);
    }
    if (cfg->store_path[0] == '\0') {
        snprintf(cfg->store_path, sizeof(cfg->store_path), "%.*s/hsbus.db",
                 (int)sizeof(cfg->store_path) - 12, cfg->data_dir);
    }
}

hsb_err config_load(config *cfg, const char *file, const char *const *sets, size_t n_sets,
                    char *err, size_t errlen)
{
    static config_parse p; /* large (per-agent flags); config_load runs on one thread */
    memset(cfg, 0, sizeof(*cfg));
    memset(&p, 0, sizeof(p));
    p.cfg = cfg;
    p.err = err;
    p.errlen = errlen;
    err[0] = '\0';

    bus_config_defaults(&cfg->bus);
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (k->scope != CONFIG_SCOPE_AGENT) {
            const char *e = config_set(cfg, NULL, k, k->def);
            if (e != NULL) {
                snprintf(err, errlen, "default of [%s] %s: %s", k->section, k->name, e);
                return HSB_EINVAL;
            }
        }
    }

    p.file = "(embedded defaults)";
    config_reader rd = {.str = config_embedded, .p = &p};
    config_cur_reader = &rd;
    int r = ini_parse_stream(config_read, &rd, config_ini_cb, &p);
    config_cur_reader = NULL;
    if (r != 0 || p.failed) {
        return HSB_EINVAL;
    }
    if (file != NULL && file[0] != '\0') {
        snprintf(cfg->file, sizeof(cfg->file), "%s", file);
        p.file = file;
        config_reader fr = {.f = fopen(file, "r"), .p = &p};
        if (fr.f == NULL) {
            snprintf(err, errlen, "%s: cannot open: %s", file, strerror(errno));
            return HSB_EINVAL;
        }
        config_cur_reader = &fr;
        r = ini_parse_stream(config_read, &fr, config_ini_cb, &p);
        config_cur_reader = NULL;
        fclose(fr.f);
        if (p.failed) {
            return HSB_EINVAL;
        }
        if (r > 0) {
            snprintf(err, errlen, "%s:%d: syntax error", file, r);
            return HSB_EINVAL;
        }
    }
    /* Overrides: "section.key=value"; the section may itself contain dots (agent.echo). */
    for (size_t i = 0; i < n_sets; i++) {
        const char *s = sets[i];
        const char *eq = strchr(s, '=');
        const char *dot = eq != NULL ? memrchr(s, '.', (size_t)(eq - s)) : NULL;
        if (eq == NULL || dot == NULL || dot == s) {
            snprintf(err, errlen, "--set %s: expected section.key=value", s);
            return HSB_EINVAL;
        }
        char section[128], key[64];
        snprintf(section, sizeof(section), "%.*s", (int)(dot - s), s);
        snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1), dot + 1);
        p.file = "--set";
        if (config_ini_line_cb(&p, section, key, eq + 1, (int)i + 1) == 0 || p.failed) {
            return HSB_EINVAL;
        }
    }

    /* Agent bus settings not given in their own section come from [bus]. */
    for (size_t ai = 0; ai < cfg->n_agents; ai++) {
        config_agent *a = &cfg->agents[ai];
        for (size_t i = 0; i < CONFIG_NKEYS; i++) {
            const config_key *k = &config_keys[i];
            if (k->scope == CONFIG_SCOPE_AGENT_BUS && !p.agent_bus_set[ai][i]) {
                memcpy((char *)&a->bus + k->off, (char *)&cfg->bus.agent_defaults + k->off,
                       k->size);
            }
        }
    }
    config_resolve(cfg);
    return HSB_OK;
}

const config_agent *config_agent_find(const config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->n_agents; i++) {
        if (strcmp(cfg->agents[i].name, name) == 0) {
            return &cfg->agents[i];
        }
    }
    return NULL;
}

const char *config_agent_option(const config_agent *a, const char *key)
{
    for (size_t i = 0; i < a->n_opts; i++) {
        if (strcmp(a->opts[i].key, key) == 0) {
            return a->opts[i].value;
        }
    }
    return NULL;
}

/* Strings are compared as strings: bytes after the NUL may differ between two loads. */
static bool config_field_equal(const config_key *k, const void *a, const void *b)
{
    if (k->type == CONFIG_STR || k->type == CONFIG_LEVEL || k->type == CONFIG_SYNC) {
        return strcmp(a, b) == 0;
    }
    return memcmp(a, b, k->size) == 0;
}

/* Options compare by key and value: their line numbers move when the file is edited above them. */
static bool config_opts_equal(const config_agent *a, const config_agent *b)
{
    if (a->n_opts != b->n_opts) {
        return false;
    }
    for (size_t i = 0; i < a->n_opts; i++) {
        const char *v = config_agent_option(b, a->opts[i].key);
        if (v == NULL || strcmp(v, a->opts[i].value) != 0) {
            return false;
        }
    }
    return true;
}

static void config_append(char *buf, size_t len, const char *section, const char *key)
{
    size_t used = strlen(buf);
    if (used < len) {
        snprintf(buf + used, len - used, "%s%s.%s", used ? "," : "", section, key);
    }
}

size_t config_diff(const config *old, const config *new_cfg, char *live, size_t live_len,
                   char *restart, size_t restart_len)
{
    size_t n_restart = 0;
    live[0] = restart[0] = '\0';
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (k->scope != CONFIG_SCOPE_MAIN && k->scope != CONFIG_SCOPE_AGENT_BUS) {
            continue;
        }
        const void *a = config_field((config *)old, NULL, k);
        const void *b = config_field((config *)new_cfg, NULL, k);
        if (!config_field_equal(k, a, b)) {
            if (k->live) {
                config_append(live, live_len, k->section, k->name);
            } else {
                config_append(restart, restart_len, k->section, k->name);
                n_restart++;
            }
        }
    }
    /* Agents: per-agent keys. A new or removed agent section needs a restart. */
    for (size_t ai = 0; ai < new_cfg->n_agents; ai++) {
        const config_agent *na = &new_cfg->agents[ai];
        const config_agent *oa = config_agent_find(old, na->name);
        char sec[80];
        snprintf(sec, sizeof(sec), "agent.%s", na->name);
        if (oa == NULL) {
            config_append(restart, restart_len, sec, "*");
            n_restart++;
            continue;
        }
        for (size_t i = 0; i < CONFIG_NKEYS; i++) {
            const config_key *k = &config_keys[i];
            const void *a, *b;
            if (k->scope == CONFIG_SCOPE_AGENT) {
                a = (const char *)oa + k->off;
                b = (const char *)na + k->off;
            } else if (k->scope == CONFIG_SCOPE_AGENT_BUS) {
                a = (const char *)&oa->bus + k->off;
                b = (const char *)&na->bus + k->off;
            } else {
                continue;
            }
            if (!config_field_equal(k, a, b)) {
                if (k->live) {
                    config_append(live, live_len, sec, k->name);
                } else {
                    config_append(restart, restart_len, sec, k->name);
                    n_restart++;
                }
            }
        }
        if (!config_opts_equal(oa, na)) {
            config_append(live, live_len, sec, "options");
        }
    }
    for (size_t ai = 0; ai < old->n_agents; ai++) {
        if (config_agent_find(new_cfg, old->agents[ai].name) == NULL) {
            char sec[80];
            snprintf(sec, sizeof(sec), "agent.%s", old->agents[ai].name);
            config_append(restart, restart_len, sec, "*");
            n_restart++;
        }
    }
    return n_restart;
}

static void config_print_value(FILE *out, const config_key *k, const void *f)
{
    switch (k->type) {
    case CONFIG_STR:
    case CONFIG_LEVEL:
    case CONFIG_SYNC:
        fprintf(out, "%s", (const char *)f);
        break;
    case CONFIG_BOOL:
        fprintf(out, "%s", *(const bool *)f ? "true" : "false");
        break;
    case CONFIG_U32:
    case CONFIG_U64:
        if (k->size == sizeof(uint32_t)) {
            fprintf(out, "%" PRIu32, *(const uint32_t *)f);
        } else {
            fprintf(out, "%" PRIu64, *(const uint64_t *)f);
        }
        break;
    }
}

void config_print(const config *cfg, FILE *out)
{
    fprintf(out, "# hsbusd.conf - every key, its default and what it does.\n"
                 "# Generated by `hsbusd --print-config`; all keys are optional.\n"
                 "# Keys marked (live) change on SIGHUP or `hsbusctl reload`; others need a "
                 "restart.\n");
    const char *last = "";
    for (size_t i = 0; i < CONFIG_NKEYS; i++) {
        const config_key *k = &config_keys[i];
        if (strcmp(k->section, "agent") == 0) {
            continue;
        }
        if (strcmp(k->section, last) != 0) {
            fprintf(out, "\n[%s]\n", k->section);
            last = k->section;
        }
        fprintf(out, "# %s%s\n%s = ", k->doc, k->live ? " (live)" : "", k->name);
        config_print_value(out, k, config_field((config *)cfg, NULL, k));
        fputc('\n', out);
    }
    for (size_t ai = 0; ai < cfg->n_agents; ai++) {
        const config_agent *a = &cfg->agents[ai];
        fprintf(out,
                "\n# One section per agent. Any [bus] key from queue_max_msgs down may be\n"
                "# set here for this agent alone; other keys are the agent's own options.\n"
                "[agent.%s]\n",
                a->name);
        for (size_t i = 0; i < CONFIG_NKEYS; i++) {
            const config_key *k = &config_keys[i];
            if (k->scope != CONFIG_SCOPE_AGENT) {
                continue;
            }
            fprintf(out, "# %s%s\n%s = ", k->doc, k->live ? " (live)" : "", k->name);
            config_print_value(out, k, (const char *)a + k->off);
            fputc('\n', out);
        }
        for (size_t i = 0; i < a->n_opts; i++) {
            fprintf(out, "%s = %s\n", a->opts[i].key, a->opts[i].value);
        }
    }
}
