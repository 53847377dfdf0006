/* bus/inflight.c - per-client in-flight table keyed by message id (bus_inflight_*). */
#include <stdlib.h>
#include <string.h>

#include "bus/inflight.h"

void bus_inflight_init(bus_inflight *t)
{
    memset(t, 0, sizeof(*t));
    bus_idmap_init(&t->index);
}

void bus_inflight_fini(bus_inflight *t)
{
    for (size_t i = 0; i < t->len; i++) {
        bus_msg_unref(t->v[i].msg);
    }
    free(t->v);
    bus_idmap_fini(&t->index);
    memset(t, 0, sizeof(*t));
}

hsb_err bus_inflight_add(bus_inflight *t, const bus_inflight_entry *e)
{
    uint64_t id = e->msg->env.id;
    if (bus_idmap_get(&t->index, id, NULL)) {
        return HSB_EINVAL;
    }
    if (t->len == t->cap) {
        size_t ncap = t->cap != 0 ? t->cap * 2 : 16;
        bus_inflight_entry *nv = realloc(t->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            return HSB_ENOMEM;
        }
        t->v = nv;
        t->cap = ncap;
    }
    hsb_err err = bus_idmap_put(&t->index, id, t->len);
    if (err != HSB_OK) {
        return err;
    }
    t->v[t->len++] = *e;
    return HSB_OK;
}

bus_inflight_entry *bus_inflight_get(bus_inflight *t, uint64_t id)
{
    uint64_t pos;
    if (!bus_idmap_get(&t->index, id, &pos)) {
        return NULL;
    }
    return &t->v[pos];
}

static void bus_inflight_remove_at(bus_inflight *t, size_t pos, bus_inflight_entry *out)
{
    *out = t->v[pos];
    bus_idmap_del(&t->index, out->msg->env.id);
    t->len--;
    if (pos != t->len) {
        t->v[pos] = t->v[t->len];
        /* The moved entry's key exists, so this put only overwrites and cannot fail. */
        (void)bus_idmap_put(&t->index, t->v[pos].msg->env.id, pos);
    }
}

bool bus_inflight_take(bus_inflight *t, uint64_t id, bus_inflight_entry *out)
{
    uint64_t pos;
    if (!bus_idmap_get(&t->index, id, &pos)) {
        return false;
    }
    bus_inflight_remove_at(t, (size_t)pos, out);
    return true;
}

bool bus_inflight_pop(bus_inflight *t, bus_inflight_entry *out)
{
    if (t->len == 0) {
        return false;
    }
    bus_inflight_remove_at(t, t->len - 1, out);
    return true;
}

size_t bus_inflight_len(const bus_inflight *t)
{
    return t->len;
}
