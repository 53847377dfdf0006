/*
 * bus/breaker.h - one circuit breaker per agent (bus_breaker_*).
 *
 * CLOSED -> OPEN when failure_threshold consecutive failures are recorded, or when the failure
 * rate over the last window_ms reaches rate_threshold_pct once at least rate_min_calls outcomes
 * were recorded in that window. OPEN -> HALF_OPEN after recovery_timeout_ms (bus_breaker_poll).
 * HALF_OPEN admits half_open_probes messages; the first outcome decides: a success closes the
 * breaker, a failure opens it again. An operator can force it open or closed (it then stays there,
 * whatever is recorded, until another action) or reset it (closed, counters cleared, not forced).
 *
 * The module is pure state: it reports transitions to its caller, which publishes them. The
 * window is ten buckets of window_ms/10, so memory is constant.
 *
 * Threads: the bus's loop thread. Nothing blocks or calls back.
 */
#ifndef HSB_BUS_BREAKER_H
#define HSB_BUS_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "bus/bus.h"

#define BUS_BREAKER_BUCKETS 10

typedef struct bus_breaker {
    bus_breaker_config cfg;
    bus_breaker_state state;
    bool forced;
    uint32_t consecutive;  /* consecutive failures while CLOSED */
    uint64_t opened_at_ms; /* when it last opened; 0 when not OPEN */
    uint32_t admitted;     /* probes admitted in this HALF_OPEN period */
    uint64_t transitions;
    uint64_t bucket_epoch[BUS_BREAKER_BUCKETS]; /* now / bucket width, for each bucket */
    uint32_t bucket_calls[BUS_BREAKER_BUCKETS];
    uint32_t bucket_fails[BUS_BREAKER_BUCKETS];
} bus_breaker;

/* A transition, as reported by the functions below. reason is a static string. */
typedef struct bus_breaker_transition {
    bus_breaker_state from;
    bus_breaker_state to;
    const char *reason;
} bus_breaker_transition;

/* bus_breaker_init sets br CLOSED with cfg (copied). */
void bus_breaker_init(bus_breaker *br, const bus_breaker_config *cfg);

/* bus_breaker_set_config replaces the thresholds; the state is kept. */
void bus_breaker_set_config(bus_breaker *br, const bus_breaker_config *cfg);

/* bus_breaker_record records one outcome at now. Returns true and fills *t when it changed the
 * state. A forced breaker records counts but never changes state. */
bool bus_breaker_record(bus_breaker *br, uint64_t now, bool success, bus_breaker_transition *t);

/* bus_breaker_poll moves an unforced OPEN breaker to HALF_OPEN once its recovery timeout has
 * passed. Returns true and fills *t when it did. */
bool bus_breaker_poll(bus_breaker *br, uint64_t now, bus_breaker_transition *t);

/* bus_breaker_recovery_at returns when an unforced OPEN breaker becomes HALF_OPEN, else 0. */
uint64_t bus_breaker_recovery_at(const bus_breaker *br);

/* bus_breaker_admit decides whether a new message may be accepted for the agent now: true when
 * CLOSED, or HALF_OPEN with a probe left (which it uses up); false otherwise. */
bool bus_breaker_admit(bus_breaker *br);

/* bus_breaker_may_deliver reports whether queued messages may be handed to the agent: not while
 * OPEN; in HALF_OPEN only while fewer than half_open_probes probes are in flight. */
bool bus_breaker_may_deliver(const bus_breaker *br, uint32_t probes_in_flight);

/* bus_breaker_operate applies an operator action at now. Returns true and fills *t when the state
 * changed (a reset of a CLOSED breaker clears counters without a transition). */
bool bus_breaker_operate(bus_breaker *br, bus_breaker_action action, uint64_t now,
                         bus_breaker_transition *t);

/* bus_breaker_window counts the calls and failures inside the window ending at now. */
void bus_breaker_window(const bus_breaker *br, uint64_t now, uint32_t *calls, uint32_t *fails);

#endif /* HSB_BUS_BREAKER_H */
