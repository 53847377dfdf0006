/* bus/breaker.c - per-agent circuit breaker state machine (bus_breaker_*); see breaker.h. */
#include <string.h>

#include "bus/breaker.h"

void bus_breaker_init(bus_breaker *br, const bus_breaker_config *cfg)
{
    memset(br, 0, sizeof(*br));
    br->cfg = *cfg;
    br->state = BUS_BREAKER_CLOSED;
}

void bus_breaker_set_config(bus_breaker *br, const bus_breaker_config *cfg)
{
    br->cfg = *cfg;
}

static uint64_t bus_breaker_bucket_ms(const bus_breaker *br)
{
    uint64_t w = br->cfg.window_ms / BUS_BREAKER_BUCKETS;
    return w != 0 ? w : 1;
}

static void bus_breaker_clear(bus_breaker *br)
{
    br->consecutive = 0;
    br->admitted = 0;
    memset(br->bucket_epoch, 0, sizeof(br->bucket_epoch));
    memset(br->bucket_calls, 0, sizeof(br->bucket_calls));
    memset(br->bucket_fails, 0, sizeof(br->bucket_fails));
}

void bus_breaker_window(const bus_breaker *br, uint64_t now, uint32_t *calls, uint32_t *fails)
{
    uint64_t epoch = now / bus_breaker_bucket_ms(br);
    *calls = 0;
    *fails = 0;
    for (int i = 0; i < BUS_BREAKER_BUCKETS; i++) {
        if (br->bucket_calls[i] != 0 && br->bucket_epoch[i] + BUS_BREAKER_BUCKETS > epoch) {
            *calls += br->bucket_calls[i];
            *fails += br->bucket_fails[i];
        }
    }
}

static bool bus_breaker_go(bus_breaker *br, bus_breaker_state to, uint64_t now, const char *reason,
                           bus_breaker_transition *t)
{
    if (br->state == to) {
        return false;
    }
    t->from = br->state;
    t->to = to;
    t->reason = reason;
    br->state = to;
    br->transitions++;
    br->admitted = 0;
    br->opened_at_ms = to == BUS_BREAKER_OPEN ? (now != 0 ? now : 1) : 0;
    if (to == BUS_BREAKER_CLOSED) {
        bus_breaker_clear(br);
    }
    return true;
}

bool bus_breaker_record(bus_breaker *br, uint64_t now, bool success, bus_breaker_transition *t)
{
    uint64_t epoch = now / bus_breaker_bucket_ms(br);
    int b = (int)(epoch % BUS_BREAKER_BUCKETS);
    if (br->bucket_epoch[b] != epoch) {
        br->bucket_epoch[b] = epoch;
        br->bucket_calls[b] = 0;
        br->bucket_fails[b] = 0;
    }
    br->bucket_calls[b]++;
    if (!success) {
        br->bucket_fails[b]++;
        br->consecutive++;
    } else {
        br->consecutive = 0;
    }
    if (br->forced) {
        return false;
    }
    switch (br->state) {
    case BUS_BREAKER_CLOSED:
        if (success) {
            return false;
        }
        if (br->cfg.failure_threshold != 0 && br->consecutive >= br->cfg.failure_threshold) {
            return bus_breaker_go(br, BUS_BREAKER_OPEN, now, "consecutive_failures", t);
        }
        if (br->cfg.rate_threshold_pct != 0) {
            uint32_t calls, fails;
            bus_breaker_window(br, now, &calls, &fails);
            if (calls >= br->cfg.rate_min_calls && calls > 0 &&
                (uint64_t)fails * 100 >= (uint64_t)br->cfg.rate_threshold_pct * calls) {
                return bus_breaker_go(br, BUS_BREAKER_OPEN, now, "failure_rate", t);
            }
        }
        return false;
    case BUS_BREAKER_HALF_OPEN:
        if (success) {
            return bus_breaker_go(br, BUS_BREAKER_CLOSED, now, "probe_succeeded", t);
        }
        return bus_breaker_go(br, BUS_BREAKER_OPEN, now, "probe_failed", t);
    case BUS_BREAKER_OPEN:
    default:
        return false;
    }
}

uint64_t bus_breaker_recovery_at(const bus_breaker *br)
{
    if (br->state != BUS_BREAKER_OPEN || br->forced) {
        return 0;
    }
    return br->opened_at_ms + br->cfg.recovery_timeout_ms;
}

bool bus_breaker_poll(bus_breaker *br, uint64_t now, bus_breaker_transition *t)
{
    uint64_t at = bus_breaker_recovery_at(br);
    if (at == 0 || now < at) {
        return false;
    }
    return bus_breaker_go(br, BUS_BREAKER_HALF_OPEN, now, "recovery_timeout", t);
}

bool bus_breaker_admit(bus_breaker *br)
{
    switch (br->state) {
    case BUS_BREAKER_CLOSED:
        return true;
    case BUS_BREAKER_HALF_OPEN:
        if (br->admitted < br->cfg.half_open_probes) {
            br->admitted++;
            return true;
        }
        return false;
    case BUS_BREAKER_OPEN:
    default:
        return false;
    }
}

bool bus_breaker_may_deliver(const bus_breaker *br, uint32_t probes_in_flight)
{
    switch (br->state) {
    case BUS_BREAKER_CLOSED:
        return true;
    case BUS_BREAKER_HALF_OPEN:
        return probes_in_flight < br->cfg.half_open_probes;
    case BUS_BREAKER_OPEN:
    default:
        return false;
    }
}

bool bus_breaker_operate(bus_breaker *br, bus_breaker_action action, uint64_t now,
                         bus_breaker_transition *t)
{
    switch (action) {
    case BUS_BREAKER_FORCE_OPEN:
        br->forced = true;
        return bus_breaker_go(br, BUS_BREAKER_OPEN, now, "forced_open", t);
    case BUS_BREAKER_FORCE_CLOSE:
        br->forced = true;
        return bus_breaker_go(br, BUS_BREAKER_CLOSED, now, "forced_close", t);
    case BUS_BREAKER_RESET:
    default:
        br->forced = false;
        bus_breaker_clear(br);
        return bus_breaker_go(br, BUS_BREAKER_CLOSED, now, "reset", t);
    }
}
