/*
 * benches/bench_selftest.c - `hsbus-bench --selftest`: checks the histogram's percentiles and the
 * baseline gate and the result's extra fields on synthetic data (no daemon, no timing), for the
 * test suite.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

static int selftest_fail(const char *what, double got, double want)
{
    fprintf(stderr, "selftest: %s: got %.6g, want %.6g\n", what, got, want);
    return 1;
}

static int selftest_hist(void)
{
    bench_hist *h = calloc(1, sizeof(*h));
    int bad = 0;

    if (h == NULL) {
        return 1;
    }
    /* 1..100000 us, uniform: the p-th percentile is p * 1000 us, within the bucket error. */
    for (uint64_t v = 1; v <= 100000; v++) {
        bench_hist_record(h, v * 1000);
    }
    static const double ps[] = {1, 10, 50, 90, 99, 99.9, 100};
    for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
        double want = ps[i] * 1000.0 * 1000.0, got = bench_hist_pct(h, ps[i]);
        if (fabs(got - want) / want > 0.01) {
            bad += selftest_fail("percentile", got, want);
        }
    }
    if (fabs(bench_hist_mean(h) - 50000.5 * 1000) > 1) {
        bad += selftest_fail("mean", bench_hist_mean(h), 50000.5 * 1000);
    }
    /* Small values are exact; the maximum bounds the top percentile. */
    bench_hist *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        free(h);
        return 1;
    }
    bench_hist_record(s, 7);
    bench_hist_record(s, 100);
    if (bench_hist_pct(s, 50) != 7 || bench_hist_pct(s, 100) != 100) {
        bad += selftest_fail("small values", bench_hist_pct(s, 100), 100);
    }
    /* A snapshot difference keeps only the later samples. */
    bench_hist_snapshot(h, s);
    bench_hist_record(s, 5000000);
    bench_hist_sub(s, h);
    if (s->count != 1 || fabs(bench_hist_pct(s, 50) - 5e6) / 5e6 > 0.01) {
        bad += selftest_fail("snapshot difference", bench_hist_pct(s, 50), 5e6);
    }
    free(s);
    free(h);
    return bad;
}

static int selftest_gate(const char *tmpdir)
{
    static const char base[] =
        "{\n  \"tolerance\": 0.5, \"max_error_rate\": 0.01,\n"
        "  \"ratios\": {\"fast\": 1.0, \"slow\": 1.0, \"absent\": 2.0, \"gone\": 1.0},\n"
        "  \"error_free\": [\"scn\"]\n}\n";
    char path[600];
    bench_result *r = calloc(4, sizeof(*r));
    bench_result *list[4];
    bench_report rep = {.url = "selftest", .trials = 1, .res = list, .n_res = 4};
    int bad = 0;

    if (r == NULL) {
        return 1;
    }
    snprintf(path, sizeof(path), "%s/baseline.json", tmpdir);
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(base, f) < 0 || fclose(f) != 0) {
        free(r);
        return 1;
    }
    snprintf(r[0].name, sizeof(r[0].name), "fast");
    r[0].available = true;
    r[0].ratio = 0.6; /* above the floor 0.5 */
    snprintf(r[1].name, sizeof(r[1].name), "gone");
    r[1].available = false; /* unavailable: skipped */
    snprintf(r[2].name, sizeof(r[2].name), "scn");
    r[2].available = true;
    r[2].ok = 1000;
    r[2].failed = 5;
    r[2].total = 1005;
    snprintf(r[3].name, sizeof(r[3].name), "slow");
    r[3].available = true;
    r[3].ratio = 0.6;
    for (int i = 0; i < 4; i++) {
        list[i] = &r[i];
    }
    if (bench_compare(&rep, path) != 0) {
        bad += selftest_fail("gate passes", 1, 0);
    }
    r[3].ratio = 0.4; /* below the floor */
    if (bench_compare(&rep, path) != 1) {
        bad += selftest_fail("gate catches a ratio", 0, 1);
    }
    r[3].ratio = 0.6;
    r[2].failed = 50; /* 4.8 % errors */
    if (bench_compare(&rep, path) != 1) {
        bad += selftest_fail("gate catches errors", 0, 1);
    }
    unlink(path);
    free(r);
    return bad;
}

/* The soak reports ten extra fields; a result must keep every one of them, in order. */
static int selftest_extra(void)
{
    bench_result *r = calloc(1, sizeof(*r));
    int bad = 0;

    if (r == NULL) {
        return selftest_fail("calloc", 0, 1);
    }
    for (int i = 0; i < 10; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        bench_result_extra(r, key, i);
    }
    if (r->n_extra != 10) {
        bad += selftest_fail("extra fields kept", (double)r->n_extra, 10);
    } else if (strcmp(r->extra[9].key, "k9") != 0 || r->extra[9].value != 9) {
        bad += selftest_fail("last extra field", r->extra[9].value, 9);
    }
    free(r);
    return bad;
}

int bench_selftest(const char *tmpdir)
{
    int bad = selftest_hist() + selftest_gate(tmpdir) + selftest_extra();

    fprintf(stderr, "selftest: %s\n", bad == 0 ? "ok" : "FAILED");
    return bad == 0 ? 0 : 1;
}
