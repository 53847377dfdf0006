/* bus/router.c - type/topic routes and the reply map (bus_router_*); see router.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus/router.h"

void bus_router_init(bus_router *r, size_t reply_max)
{
    memset(r, 0, sizeof(*r));
    r->reply_max = reply_max != 0 ? reply_max : 1;
}

void bus_router_fini(bus_router *r)
{
    free(r->types.v);
    free(r->topics.v);
    free(r->replies);
    memset(r, 0, sizeof(*r));
}

static bool bus_router_parse(const char *pattern, bool *prefix, size_t *plen)
{
    size_t len = strlen(pattern);
    if (len >= 2 && pattern[len - 2] == '.' && pattern[len - 1] == '*') {
        if (!hsb_name_valid(pattern, len - 2)) {
            return false;
        }
        *prefix = true;
        *plen = len - 1; /* keep the dot: "lab.*" matches "lab.x", not "labx" */
        return true;
    }
    if (!hsb_name_valid(pattern, len)) {
        return false;
    }
    *prefix = false;
    *plen = len;
    return true;
}

static hsb_err bus_router_add(bus_route_list *l, const char *pattern, void *agent)
{
    bool prefix;
    size_t plen;
    if (!bus_router_parse(pattern, &prefix, &plen)) {
        return HSB_EBADNAME;
    }
    for (size_t i = 0; i < l->len; i++) {
        if (l->v[i].agent == agent && strcmp(l->v[i].pat, pattern) == 0) {
            l->v[i].refs++;
            return HSB_OK;
        }
    }
    if (l->len == l->cap) {
        size_t ncap = l->cap != 0 ? l->cap * 2 : 8;
        bus_route *nv = realloc(l->v, ncap * sizeof(*nv));
        if (nv == NULL) {
            return HSB_ENOMEM;
        }
        l->v = nv;
        l->cap = ncap;
    }
    bus_route *rt = &l->v[l->len++];
    snprintf(rt->pat, sizeof(rt->pat), "%s", pattern);
    rt->plen = plen;
    rt->prefix = prefix;
    rt->agent = agent;
    rt->refs = 1;
    return HSB_OK;
}

static void bus_router_del(bus_route_list *l, const char *pattern, void *agent)
{
    for (size_t i = 0; i < l->len; i++) {
        if (l->v[i].agent == agent && strcmp(l->v[i].pat, pattern) == 0) {
            if (--l->v[i].refs == 0) {
                /* Keep declaration order: it breaks ties. */
                memmove(&l->v[i], &l->v[i + 1], (l->len - i - 1) * sizeof(*l->v));
                l->len--;
            }
            return;
        }
    }
}

hsb_err bus_router_add_type(bus_router *r, const char *pattern, void *agent)
{
    return bus_router_add(&r->types, pattern, agent);
}

hsb_err bus_router_add_topic(bus_router *r, const char *pattern, void *agent)
{
    return bus_router_add(&r->topics, pattern, agent);
}

void bus_router_del_type(bus_router *r, const char *pattern, void *agent)
{
    bus_router_del(&r->types, pattern, agent);
}

void bus_router_del_topic(bus_router *r, const char *pattern, void *agent)
{
    bus_router_del(&r->topics, pattern, agent);
}

static bool bus_router_matches(const bus_route *rt, const char *name, size_t len)
{
    if (!rt->prefix) {
        return len == rt->plen && memcmp(rt->pat, name, len) == 0;
    }
    return len > rt->plen && memcmp(rt->pat, name, rt->plen) == 0;
}

void *bus_router_match_type(const bus_router *r, const char *type)
{
    size_t len = strlen(type);
    const bus_route *best = NULL;
    for (size_t i = 0; i < r->types.len; i++) {
        const bus_route *rt = &r->types.v[i];
        if (!bus_router_matches(rt, type, len)) {
            continue;
        }
        if (!rt->prefix) {
            return rt->agent;
        }
        if (best == NULL || rt->plen > best->plen) {
            best = rt;
        }
    }
    return best != NULL ? best->agent : NULL;
}

size_t bus_router_match_topic(const bus_router *r, const char *topic, void **out, size_t max)
{
    size_t len = strlen(topic);
    size_t n = 0;
    for (size_t i = 0; i < r->topics.len; i++) {
        const bus_route *rt = &r->topics.v[i];
        if (!bus_router_matches(rt, topic, len)) {
            continue;
        }
        /* An agent may match through several patterns; count it once. */
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            seen = r->topics.v[j].agent == rt->agent &&
                   bus_router_matches(&r->topics.v[j], topic, len);
        }
        if (seen) {
            continue;
        }
        if (n < max) {
            out[n] = rt->agent;
        }
        n++;
    }
    return n;
}

hsb_err bus_router_reply_add(bus_router *r, uint64_t id, uint64_t session, void *agent,
                             uint64_t deadline)
{
    if (id == 0) {
        return HSB_EINVAL;
    }
    if (r->replies == NULL) {
        /* Fault every page in now. Slots are taken in id order, so traffic touches the whole map
         * within reply_max messages anyway; done at once, the daemon's RSS reaches its working size
         * with the first request instead of creeping for minutes, which an operator watching for a
         * leak (or sizing a memory limit) would misread. */
        size_t bytes = r->reply_max * sizeof(*r->replies);
        r->replies = calloc(r->reply_max, sizeof(*r->replies));
        if (r->replies == NULL) {
            return HSB_ENOMEM;
        }
        for (size_t off = 0; off < bytes; off += 4096) {
            /* A write, so the page is really allocated; a memset after calloc may be elided. */
            ((volatile char *)r->replies)[off] = 0;
        }
    }
    r->replies[id % r->reply_max] =
        (bus_reply_slot){.id = id, .session = session, .deadline = deadline, .agent = agent};
    return HSB_OK;
}

bool bus_router_reply_find(const bus_router *r, uint64_t corr, uint64_t now, uint64_t *session,
                           void **agent)
{
    if (r->replies == NULL || corr == 0) {
        return false;
    }
    const bus_reply_slot *s = &r->replies[corr % r->reply_max];
    if (s->id != corr || s->deadline <= now) {
        return false;
    }
    *session = s->session;
    *agent = s->agent;
    return true;
}

void bus_router_reply_forget(bus_router *r, uint64_t id)
{
    if (r->replies != NULL && id != 0 && r->replies[id % r->reply_max].id == id) {
        r->replies[id % r->reply_max].id = 0;
    }
}
