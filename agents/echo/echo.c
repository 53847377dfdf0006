/*
 * agents/echo/echo.c - the built-in echo agent, for tests and benchmarks.
 *
 * It answers every message with the message's own body (a reply: corr = the request's id).
 * Options, from its [agent.NAME] section:
 *   fail_pct  = 0..100   share of messages to fail (nack), for breaker tests;
 *   delay_ms  = 0..60000 time to take per message, for deadline and backpressure tests.
 * The daemon refuses unknown options before start-up, naming the file and line
 * (echo_agent_option_known).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "agents/agent.h"
#include "agents/echo/echo.h"

typedef struct echo_state {
    uint32_t fail_pct;
    uint32_t delay_ms;
} echo_state;

static const char *const echo_options[] = {"fail_pct", "delay_ms"};

static hsb_err echo_parse_u32(hsb_agent_env *env, const char *key, uint32_t max, uint32_t *out)
{
    const char *v = env->option(env, key);
    if (v == NULL) {
        return HSB_OK;
    }
    char *end;
    errno = 0;
    unsigned long n = strtoul(v, &end, 10);
    if (v[0] == '\0' || v[0] == '-' || *end != '\0' || errno != 0 || n > max) {
        env->log(env, HSB_LOG_ERROR, "bad_option", "key=%s max=%u", key, (unsigned)max);
        return HSB_EINVAL;
    }
    *out = (uint32_t)n;
    return HSB_OK;
}

static hsb_err echo_init(hsb_agent_env *env, void **state)
{
    echo_state *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return HSB_ENOMEM;
    }
    if (echo_parse_u32(env, "fail_pct", 100, &s->fail_pct) != HSB_OK ||
        echo_parse_u32(env, "delay_ms", 60000, &s->delay_ms) != HSB_OK) {
        free(s);
        return HSB_EINVAL;
    }
    *state = s;
    return HSB_OK;
}

static void echo_handle_batch(void *state, hsb_agent_env *env, const hsb_envelope *msgs, size_t n,
                              hsb_err *results)
{
    echo_state *s = state;
    for (size_t i = 0; i < n; i++) {
        if (s->delay_ms > 0) {
            struct timespec ts = {s->delay_ms / 1000, (long)(s->delay_ms % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (s->fail_pct > 0 && randombytes_uniform(100) < s->fail_pct) {
            results[i] = HSB_EINTERNAL;
            continue;
        }
        results[i] = env->reply(env, &msgs[i], msgs[i].body, msgs[i].body_len);
    }
}

static void echo_fini(void *state, hsb_agent_env *env)
{
    (void)env;
    free(state);
}

static const hsb_agent_ops echo_ops = {
    .abi = HSB_AGENT_ABI,
    .name = "echo",
    .handles = NULL,
    .subscribes = NULL,
    .init = echo_init,
    .handle_batch = echo_handle_batch,
    .fini = echo_fini,
};

const hsb_agent_ops *echo_agent_ops(void)
{
    return &echo_ops;
}

bool echo_agent_option_known(const char *key)
{
    for (size_t i = 0; i < sizeof(echo_options) / sizeof(echo_options[0]); i++) {
        if (strcmp(key, echo_options[i]) == 0) {
            return true;
        }
    }
    return false;
}
