/*
 * bus/router.h - the routing tables (bus_router_*): which agent handles a type, which agents
 * subscribe to a topic, and which instance sent a message that a reply (corr) answers.
 *
 * Types and topics: a list of (pattern, agent) routes with a count of the instances that declared
 * them, so a route lives while at least one instance of its agent is attached. A pattern is a
 * name (exact) or "prefix.*" (any name that starts with "prefix."). A type goes to the exact match
 * if there is one, else to the longest matching prefix; among equals, the route declared first.
 * A topic goes to every agent with a matching subscription, each once. Agents are opaque
 * pointers here. The lists are scanned: they hold one entry per declared pattern (tens), which is
 * cheaper to scan than to hash at that size.
 *
 * Replies: a bounded map from a message id to its sending instance (session) and agent, kept until
 * the message's deadline (a reply after that is pointless: the request has expired), until it is
 * forgotten (dead-lettered, expired), or until reply_max newer ids have been allocated. Ids are
 * allocated in sequence by the bus, so the map is direct-mapped (slot = id % reply_max, the slot
 * keeps its id to check): no hashing, no allocation after the first, and the oldest entries are
 * the ones overwritten.
 *
 * Threads: the bus's loop thread. Nothing blocks or calls back.
 */
#ifndef HSB_BUS_ROUTER_H
#define HSB_BUS_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/envelope.h"

typedef struct bus_route {
    char pat[HSB_NAME_MAX + 3]; /* as declared */
    size_t plen;                /* length to compare: the prefix with its dot, or the name */
    bool prefix;
    void *agent;
    uint32_t refs;
} bus_route;

typedef struct bus_route_list {
    bus_route *v;
    size_t len;
    size_t cap;
} bus_route_list;

typedef struct bus_reply_slot {
    uint64_t id; /* 0 = forgotten */
    uint64_t session;
    uint64_t deadline;
    void *agent;
} bus_reply_slot;

typedef struct bus_router {
    bus_route_list types;
    bus_route_list topics;
    bus_reply_slot *replies; /* reply_max slots, allocated and faulted in on first use */
    size_t reply_max;
} bus_router;

void bus_router_init(bus_router *r, size_t reply_max);
void bus_router_fini(bus_router *r);

/* bus_router_add_type / bus_router_add_topic declare pattern for agent once more (one instance).
 * Errors: HSB_EBADNAME (not a name or "prefix.*"), HSB_ENOMEM. */
hsb_err bus_router_add_type(bus_router *r, const char *pattern, void *agent);
hsb_err bus_router_add_topic(bus_router *r, const char *pattern, void *agent);

/* bus_router_del_type / bus_router_del_topic undo one add; the route goes at zero. */
void bus_router_del_type(bus_router *r, const char *pattern, void *agent);
void bus_router_del_topic(bus_router *r, const char *pattern, void *agent);

/* bus_router_match_type returns the agent for type, or NULL. */
void *bus_router_match_type(const bus_router *r, const char *type);

/* bus_router_match_topic stores up to max distinct subscribing agents in out and returns how many
 * there are in all (which may exceed max). */
size_t bus_router_match_topic(const bus_router *r, const char *topic, void **out, size_t max);

/* bus_router_reply_add remembers that id (not 0) was sent by session of agent, until deadline,
 * replacing the entry of id - reply_max. Errors: HSB_ENOMEM (first use only), HSB_EINVAL. */
hsb_err bus_router_reply_add(bus_router *r, uint64_t id, uint64_t session, void *agent,
                             uint64_t deadline);

/* bus_router_reply_find looks up the sender of corr; false when unknown or past its deadline. */
bool bus_router_reply_find(const bus_router *r, uint64_t corr, uint64_t now, uint64_t *session,
                           void **agent);

/* bus_router_reply_forget forgets id. */
void bus_router_reply_forget(bus_router *r, uint64_t id);

#endif /* HSB_BUS_ROUTER_H */
