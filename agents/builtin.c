/*
 * agents/builtin.c - the table of compiled-in agents and the plugin loader.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "agents/echo/echo.h"
#include "agents/host.h"

typedef struct agent_builtin {
    const char *name;
    const hsb_agent_ops *(*ops)(void);
    bool (*known)(const char *key);
} agent_builtin;

static const agent_builtin agent_builtins[] = {
    {"echo", echo_agent_ops, echo_agent_option_known},
};

const hsb_agent_ops *agent_builtin_find(const char *name, bool (**known)(const char *key))
{
    for (size_t i = 0; i < sizeof(agent_builtins) / sizeof(agent_builtins[0]); i++) {
        if (strcmp(agent_builtins[i].name, name) == 0) {
            if (known != NULL) {
                *known = agent_builtins[i].known;
            }
            return agent_builtins[i].ops();
        }
    }
    return NULL;
}

hsb_err agent_plugin_load(const char *path, const hsb_agent_ops **ops, void **handle, char *err,
                          size_t errlen)
{
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        snprintf(err, errlen, "%s", dlerror());
        return HSB_ENOTFOUND;
    }
    /* POSIX: a data pointer cannot hold a function pointer in ISO C; copy the bytes. */
    void *sym = dlsym(h, HSB_AGENT_ENTRY);
    if (sym == NULL) {
        snprintf(err, errlen, "%s: no symbol %s", path, HSB_AGENT_ENTRY);
        dlclose(h);
        return HSB_ENOTFOUND;
    }
    hsb_agent_entry_fn entry;
    memcpy(&entry, &sym, sizeof(entry));
    const hsb_agent_ops *o = entry();
    if (o == NULL || o->abi != HSB_AGENT_ABI || o->name == NULL || o->handle_batch == NULL) {
        snprintf(err, errlen, "%s: ABI %u expected, or incomplete ops", path, HSB_AGENT_ABI);
        dlclose(h);
        return HSB_EINVAL;
    }
    *ops = o;
    *handle = h;
    return HSB_OK;
}

void agent_plugin_unload(void *handle)
{
    if (handle != NULL) {
        dlclose(handle);
    }
}
