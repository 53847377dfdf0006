/*
 * bus/inflight.h - the messages a client holds but has not settled (bus_inflight_*).
 *
 * One table per client, keyed by message id: a dense array of entries (removal swaps the last one
 * into the hole) plus an id map to find them. An entry keeps the reference that the queue held,
 * the destination's delivery count, the ack deadline and how the message came (from the agent's
 * shared queue, the client's own queue, or as a half-open probe), so that a nack, an ack timeout
 * or a detach can put it back where it belongs.
 *
 * Ownership: bus_inflight_add takes the caller's reference on HSB_OK; bus_inflight_take and
 * bus_inflight_pop give it back to the caller.
 *
 * Threads: the bus's loop thread. Nothing blocks or calls back.
 */
#ifndef HSB_BUS_INFLIGHT_H
#define HSB_BUS_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/bus.h"
#include "bus/idmap.h"

typedef struct bus_inflight_entry {
    bus_msg *msg;
    uint32_t deliveries;   /* this destination's count, this delivery included */
    uint64_t ack_deadline; /* clock ms after which it is redelivered */
    bool direct;           /* came from the client's own queue (reply, sys.error) */
    bool probe;            /* delivered as a half-open probe */
} bus_inflight_entry;

typedef struct bus_inflight {
    bus_inflight_entry *v;
    size_t len;
    size_t cap;
    bus_idmap index; /* id -> position in v */
} bus_inflight;

void bus_inflight_init(bus_inflight *t);

/* bus_inflight_fini drops the reference of every entry. */
void bus_inflight_fini(bus_inflight *t);

/* bus_inflight_add records e under e->msg->env.id. Errors: HSB_ENOMEM (nothing recorded). A
 * second add of an id already present replaces nothing and returns HSB_EINVAL. */
hsb_err bus_inflight_add(bus_inflight *t, const bus_inflight_entry *e);

/* bus_inflight_get returns the entry of id (valid until the table changes), or NULL. */
bus_inflight_entry *bus_inflight_get(bus_inflight *t, uint64_t id);

/* bus_inflight_take removes id into *out and returns true, or returns false when unknown. */
bool bus_inflight_take(bus_inflight *t, uint64_t id, bus_inflight_entry *out);

/* bus_inflight_pop removes any one entry into *out; false when the table is empty. */
bool bus_inflight_pop(bus_inflight *t, bus_inflight_entry *out);

/* bus_inflight_len returns the number of entries. */
size_t bus_inflight_len(const bus_inflight *t);

#endif /* HSB_BUS_INFLIGHT_H */
