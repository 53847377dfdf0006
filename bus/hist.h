/*
 * bus/hist.h - latency histograms (bus_hist_*): fixed log-scale buckets shared with /metrics.
 * The type and bus_hist_quantile are public (bus.h); recording is the bus's business.
 * Threads: the owner's thread. Nothing blocks.
 */
#ifndef HSB_BUS_HIST_H
#define HSB_BUS_HIST_H

#include "bus/bus.h"

/* bus_hist_record adds one observation of us microseconds to h. */
void bus_hist_record(bus_hist *h, uint64_t us);

#endif /* HSB_BUS_HIST_H */
