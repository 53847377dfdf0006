/*
 * daemon/config.h - hsbusd's configuration: an INI file (libinih), command-line overrides and the
 * embedded defaults.
 *
 * One table in config.c lists every key: section, name, type, default, whether it can change on a
 * reload, and a one-line description. That table drives parsing, validation, `hsbusd
 * --print-config` (which generates docs/hsbusd.conf.example) and the reload report. Every key has a
 * default, so hsbusd starts with no file at all.
 *
 * Sections: [daemon], [gateway], [bus], [store], [control], [metrics], [alerts], and one
 * [agent.NAME] per agent. Keys of an agent section that are not in the table are that agent's own
 * options (hsb_agent_env.option); the agent checks them at init and names the file and line of an
 * unknown one through config_agent_option_line.
 *
 * Threads: a config is built and read on the loop thread (main). Agents read their options
 * through the host, which keeps the config alive until they stop. Nothing here blocks except file
 * reading in config_load.
 */
#ifndef HSB_DAEMON_CONFIG_H
#define HSB_DAEMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bus/bus.h"
#include "proto/err.h"

#define CONFIG_PATH_MAX   512
#define CONFIG_AGENTS_MAX 64
#define CONFIG_OPTS_MAX   32

typedef struct config_opt {
    char key[64];
    char value[256];
    int line;
} config_opt;

typedef struct config_agent {
    char name[HSB_NAME_MAX + 1];
    char builtin[HSB_NAME_MAX + 1]; /* built-in implementation, e.g. "echo"; "" for a plugin */
    char plugin[CONFIG_PATH_MAX];   /* .so file (relative to plugin_dir), or "" */
    char token[HSB_TOKEN_MAX + 1];  /* required in hello when set (external agents) */
    bool enabled;
    uint32_t workers;
    uint32_t mailbox;     /* push credit of a built-in agent, in messages */
    char handles[512];    /* comma-separated types, overrides the agent's defaults */
    char subscribes[512]; /* comma-separated topics */
    bus_agent_config bus; /* queue, TTL, delivery and breaker settings */
    config_opt opts[CONFIG_OPTS_MAX];
    size_t n_opts;
    int line; /* where the section started, 0 for embedded defaults */
} config_agent;

typedef struct config {
    /* [daemon] */
    char run_dir[CONFIG_PATH_MAX];
    char data_dir[CONFIG_PATH_MAX];
    char plugin_dir[CONFIG_PATH_MAX];
    char log_level[16];
    uint32_t drain_timeout_ms;
    uint32_t agent_inbox_limit; /* queued agent sends before env->send answers HSB_EBUSY */

    /* [gateway] */
    char listen[CONFIG_PATH_MAX]; /* "" = ipc://<run_dir>/agents.sock */
    char listen_tcp[CONFIG_PATH_MAX];
    uint32_t contexts;     /* receiving contexts kept ready */
    uint32_t max_contexts; /* contexts in all (parked fetches hold one each) */
    uint32_t max_request;  /* NNG_OPT_RECVMAXSZ */
    uint32_t max_body;

    /* [bus] */
    bus_config bus; /* agent_defaults apply to agents without their own keys */

    /* [store] */
    bool store_enabled;
    char store_path[CONFIG_PATH_MAX]; /* "" = <data_dir>/hsbus.db */
    char synchronous[16];             /* "full" or "normal" */
    uint32_t store_readers;
    uint64_t cache_bytes;
    uint32_t cache_ttl_ms;

    /* [control] */
    bool control_enabled;
    char control_listen[CONFIG_PATH_MAX]; /* "" = ipc://<run_dir>/control.sock */

    /* [metrics] */
    bool metrics_enabled;
    char metrics_bind[64];
    uint32_t metrics_port;

    /* [alerts] */
    uint32_t alert_p99_ms; /* 0 = rule off */
    uint32_t alert_error_pct;
    uint32_t alert_queue_depth;
    uint64_t alert_rss_bytes;
    uint32_t alert_for_ms;       /* how long a condition must hold before it fires */
    uint32_t alert_interval_ms;  /* evaluation period */
    uint32_t health_loop_lag_ms; /* /healthz fails above this loop lag */

    config_agent agents[CONFIG_AGENTS_MAX];
    size_t n_agents;

    char file[CONFIG_PATH_MAX]; /* the file loaded, or "" */
} config;

/*
 * config_load builds cfg from the embedded defaults, then file (NULL or "" for none), then each
 * "section.key=value" override in sets[0..n_sets). On an unknown key, a bad value or an unreadable
 * file it returns HSB_EINVAL and writes "FILE:LINE: key: problem" into err. Blocks on file I/O.
 */
hsb_err config_load(config *cfg, const char *file, const char *const *sets, size_t n_sets,
                    char *err, size_t errlen);

/* config_agent_find returns the agent section called name, or NULL. */
const config_agent *config_agent_find(const config *cfg, const char *name);

/* config_agent_option returns an agent's own option, or NULL. */
const char *config_agent_option(const config_agent *a, const char *key);

/*
 * config_diff compares a running config with a newly loaded one. It writes the keys that differ and
 * can change live into live (comma-separated) and those that need a restart into restart. Returns
 * the number of restart-only changes.
 */
size_t config_diff(const config *old, const config *new_cfg, char *live, size_t live_len,
                   char *restart, size_t restart_len);

/* config_print writes every key with its value and description as an INI file (the example). */
void config_print(const config *cfg, FILE *out);

/* config_resolve fills the derived defaults ("" listen URLs and store path) from run_dir and
 * data_dir. config_load calls it; call it again after changing those. */
void config_resolve(config *cfg);

#endif /* HSB_DAEMON_CONFIG_H */
