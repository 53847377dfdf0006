/*
 * bus/hist.c - fixed log-scale latency buckets (bus_hist_*), 1-2.5-5 steps from 100 us to 10 s.
 * Fixed bounds keep the histograms of every agent comparable and let /metrics print them as
 * Prometheus buckets without conversion.
 */
#include "bus/hist.h"

const uint64_t bus_hist_bounds_us[BUS_HIST_BUCKETS] = {
    100,   250,    500,    1000,   2500,    5000,    10000,   25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};

void bus_hist_record(bus_hist *h, uint64_t us)
{
    size_t i = 0;
    while (i < BUS_HIST_BUCKETS && us > bus_hist_bounds_us[i]) {
        i++;
    }
    h->counts[i]++;
    h->count++;
    h->sum_us += us;
}

uint64_t bus_hist_quantile(const bus_hist *h, double q)
{
    if (h->count == 0) {
        return 0;
    }
    if (q < 0.0) {
        q = 0.0;
    }
    if (q > 1.0) {
        q = 1.0;
    }
    /* The rank of the wanted observation, 1-based; then interpolate linearly inside its bucket. */
    double rank = q * (double)h->count;
    if (rank < 1.0) {
        rank = 1.0;
    }
    uint64_t seen = 0;
    for (size_t i = 0; i <= BUS_HIST_BUCKETS; i++) {
        if (h->counts[i] == 0) {
            continue;
        }
        if ((double)(seen + h->counts[i]) >= rank) {
            if (i == BUS_HIST_BUCKETS) {
                /* Above the last bound we know nothing better than the bound itself. */
                return bus_hist_bounds_us[BUS_HIST_BUCKETS - 1];
            }
            uint64_t lo = i == 0 ? 0 : bus_hist_bounds_us[i - 1];
            uint64_t hi = bus_hist_bounds_us[i];
            double frac = (rank - (double)seen) / (double)h->counts[i];
            return lo + (uint64_t)(frac * (double)(hi - lo));
        }
        seen += h->counts[i];
    }
    return bus_hist_bounds_us[BUS_HIST_BUCKETS - 1];
}
