/*
 * bus/batch.h - batching by key (bus_batch_*): messages to one agent that share a `batch` key are
 * held until batch_max of them have arrived or the first has waited batch_linger_ms, and are then
 * released together, in arrival order, to the tail of the agent's queue, where the next flush
 * hands them to one client in one deliver call (as far as its credit goes).
 *
 * Held messages stay charged to the agent (the caller passes held_msgs/held_bytes as a reservation
 * to bus_prioq_put), so batching never lets a queue grow past its bounds. Critical messages are
 * never given to the batcher. Group buffers are kept for reuse, so there is no allocation per
 * message.
 *
 * Ownership: bus_batch_add takes the entry's reference on HSB_OK; release moves it into the queue.
 *
 * Threads: the bus's loop thread. Nothing blocks or calls back.
 */
#ifndef HSB_BUS_BATCH_H
#define HSB_BUS_BATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bus/prioq.h"

typedef struct bus_batch_group {
    char key[HSB_NAME_MAX + 1]; /* "" = free slot */
    bus_prioq_entry *v;
    size_t len;
    size_t cap;
    uint64_t first_ms; /* arrival of the oldest held message */
} bus_batch_group;

typedef struct bus_batcher {
    bus_batch_group *groups;
    size_t n_groups; /* slots in use or free */
    size_t cap_groups;
    size_t held_msgs;
    size_t held_bytes;
} bus_batcher;

void bus_batch_init(bus_batcher *bt);

/* bus_batch_fini drops the reference of every held message and frees the groups. */
void bus_batch_fini(bus_batcher *bt);

/*
 * bus_batch_add holds e under key. *ready is set when the group now holds batch_max messages (the
 * caller then calls bus_batch_release_key). Errors: HSB_ENOMEM (nothing held).
 */
hsb_err bus_batch_add(bus_batcher *bt, const char *key, bus_prioq_entry e, uint64_t now,
                      uint32_t batch_max, bool *ready);

/* bus_batch_release_key moves the group of key, if any, to the tail of q in arrival order.
 * Returns the number of messages released. */
size_t bus_batch_release_key(bus_batcher *bt, const char *key, bus_prioq *q);

/* bus_batch_release_due releases every group whose oldest message arrived at or before
 * now - linger_ms (all of them when linger_ms is 0). Returns the number of messages released. */
size_t bus_batch_release_due(bus_batcher *bt, uint64_t now, uint32_t linger_ms, bus_prioq *q);

/* bus_batch_next_due returns when the next group is due for release, or 0 when none is held. */
uint64_t bus_batch_next_due(const bus_batcher *bt, uint32_t linger_ms);

/* bus_batch_remove_if removes held messages for which take(arg, e) returns true (take then owns
 * the reference); the rest keep their order. Returns how many were taken. */
size_t bus_batch_remove_if(bus_batcher *bt, bool (*take)(void *arg, const bus_prioq_entry *e),
                           void *arg);

#endif /* HSB_BUS_BATCH_H */
