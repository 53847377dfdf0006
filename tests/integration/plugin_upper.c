/*
 * tests/integration/plugin_upper.c - a plugin agent for the plugin-loading test: it replies to
 * every message of type "text.upper" with the body's bytes upper-cased (ASCII letters).
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "agents/agent.h"

const hsb_agent_ops *hsb_agent_entry(void);

static hsb_err upper_init(hsb_agent_env *env, void **state)
{
    (void)env;
    *state = NULL;
    return HSB_OK;
}

static void upper_handle(void *state, hsb_agent_env *env, const hsb_envelope *msgs, size_t n,
                         hsb_err *results)
{
    (void)state;
    for (size_t i = 0; i < n; i++) {
        uint8_t *copy = malloc(msgs[i].body_len + 1);
        if (copy == NULL) {
            results[i] = HSB_ENOMEM;
            continue;
        }
        memcpy(copy, msgs[i].body, msgs[i].body_len);
        /* Upper-case letters only: msgpack headers of a short str are never ASCII letters. */
        for (size_t k = 0; k < msgs[i].body_len; k++) {
            if (copy[k] >= 'a' && copy[k] <= 'z') {
                copy[k] = (uint8_t)toupper(copy[k]);
            }
        }
        results[i] = env->reply(env, &msgs[i], copy, msgs[i].body_len);
        free(copy);
    }
}

static const char *const upper_handles[] = {"text.upper", NULL};

static const hsb_agent_ops upper_ops = {
    .abi = HSB_AGENT_ABI,
    .name = "upper",
    .handles = upper_handles,
    .init = upper_init,
    .handle_batch = upper_handle,
    .fini = NULL,
};

const hsb_agent_ops *hsb_agent_entry(void)
{
    return &upper_ops;
}
