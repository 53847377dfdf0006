/*
 * bus/prioq.h - a per-destination priority queue (bus_prioq_*): four lanes, each a ring buffer of
 * message references, bounded together by message count and bytes.
 *
 * Dequeue order: the critical lane first, always; then high, normal and low by weighted round
 * robin (default 4:2:1), so that a backlog of high-priority traffic never starves the low lane;
 * FIFO within a lane. When a message does not fit, it may displace the newest non-durable
 * messages of the lowest non-empty lanes below its own (an emergency is never refused because
 * routine traffic filled the queue); the caller tells their senders.
 *
 * The rings grow by doubling, so there is no allocation per message. Entries carry the per-
 * destination delivery count next to the shared message.
 *
 * Ownership: a queue holds one reference per entry. bus_prioq_put and bus_prioq_put_force take the
 * caller's reference on HSB_OK only. Entries returned by bus_prioq_get or as victims hand their
 * reference to the caller.
 *
 * Threads: a queue belongs to the bus's loop thread. Nothing here blocks or calls back into the
 * host.
 */
#ifndef HSB_BUS_PRIOQ_H
#define HSB_BUS_PRIOQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/bus.h"

/* The most messages one put may displace. */
#define BUS_PRIOQ_VICTIMS_MAX 8

typedef struct bus_prioq_entry {
    bus_msg *msg;
    uint32_t deliveries; /* deliveries so far to this destination */
} bus_prioq_entry;

typedef struct bus_prioq_ring {
    bus_prioq_entry *v;
    size_t cap; /* a power of two, or 0 */
    size_t head;
    size_t len;
} bus_prioq_ring;

typedef struct bus_prioq {
    bus_prioq_ring lanes[HSB_PRIO_COUNT];
    size_t count; /* entries in all lanes */
    size_t bytes; /* sum of msg->size */
    size_t max_msgs;
    size_t max_bytes;
    uint32_t weights[3]; /* high, normal, low */
    unsigned wrr_lane;   /* the lane being served by round robin: 1..3 */
    uint32_t wrr_used;   /* messages taken from it in its current turn */
} bus_prioq;

/* bus_prioq_init prepares an empty queue; it allocates nothing until the first put. weights are
 * high:normal:low and must each be at least 1. */
void bus_prioq_init(bus_prioq *q, size_t max_msgs, size_t max_bytes, const uint32_t weights[3]);

/* bus_prioq_fini drops the queue's reference to every entry and frees the rings. */
void bus_prioq_fini(bus_prioq *q);

/* bus_prioq_set_limits changes the bounds; entries already queued stay even above them. */
void bus_prioq_set_limits(bus_prioq *q, size_t max_msgs, size_t max_bytes);

/*
 * bus_prioq_put appends e to the tail of lane e.msg->env.prio. reserve_msgs and reserve_bytes are
 * charged against the bounds as well (messages admitted for this destination but held elsewhere,
 * such as in an open batch). When the queue is full, the newest non-durable entries of the lowest
 * non-empty lanes below e's lane are removed, as few as make room and at most max_victims, and
 * returned in victims[0..*n_victims) with their references. Errors (nothing changed, the caller
 * keeps its reference): HSB_EBUSY when no displacement makes room, HSB_ENOMEM.
 */
hsb_err bus_prioq_put(bus_prioq *q, bus_prioq_entry e, size_t reserve_msgs, size_t reserve_bytes,
                      bus_prioq_entry *victims, size_t max_victims, size_t *n_victims);

/* bus_prioq_has_room reports whether a message of size bytes fits without displacing anything,
 * with reserve_msgs and reserve_bytes charged as for bus_prioq_put. */
bool bus_prioq_has_room(const bus_prioq *q, size_t size, size_t reserve_msgs, size_t reserve_bytes);

/* bus_prioq_put_force queues e without checking the bounds: at the head of its lane when front is
 * true (redelivery), else at the tail (a released batch, already admitted). Errors: HSB_ENOMEM. */
hsb_err bus_prioq_put_force(bus_prioq *q, bus_prioq_entry e, bool front);

/* bus_prioq_get removes the next entry in priority order into *out and returns true, or returns
 * false when the queue is empty. */
bool bus_prioq_get(bus_prioq *q, bus_prioq_entry *out);

/*
 * bus_prioq_remove_if removes every entry for which take(arg, entry) returns true; take then owns
 * the entry's reference. The order of the remaining entries is kept. Returns how many were taken.
 * take must not touch q.
 */
size_t bus_prioq_remove_if(bus_prioq *q, bool (*take)(void *arg, const bus_prioq_entry *e),
                           void *arg);

/* bus_prioq_lane_len returns the number of entries in one lane. */
size_t bus_prioq_lane_len(const bus_prioq *q, unsigned lane);

#endif /* HSB_BUS_PRIOQ_H */
