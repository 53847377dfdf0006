/*
 * benches/bench_out.c - what hsbus-bench shows: the live progress line, the summary table, the
 * JSON file, the gnuplot plot and the baseline gate.
 *
 * The gate (bench_compare) reads benches/baseline.json:
 *   { "tolerance": 0.40,                 fail when ratio < expected x (1 - tolerance)
 *     "max_error_rate": 0.001,           for the scenarios listed in "error_free"
 *     "ratios": { "reqrep-c16": 0.20, ... },
 *     "error_free": [ "scn-light", ... ] }
 * Only that shape is read (a tiny scanner, not a general JSON parser): keys may come in any order.
 */
#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

bench_live bench_live_now;

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t out_thread;
static volatile int out_stop;
static bool out_running;

void bench_live_begin(const char *name, double secs, bench_hist *lat)
{
    pthread_mutex_lock(&out_mu);
    snprintf(bench_live_now.name, sizeof(bench_live_now.name), "%s", name);
    bench_live_now.t0_ns = bench_now_ns();
    bench_live_now.dur_ns = (uint64_t)(secs * 1e9);
    __atomic_store_n(&bench_live_now.ok, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&bench_live_now.failed, 0, __ATOMIC_RELAXED);
    bench_live_now.lat = lat;
    pthread_mutex_unlock(&out_mu);
}

static void *out_progress(void *arg)
{
    bool tty = isatty(STDERR_FILENO);
    uint64_t last_line = 0;
    bench_hist *snap = malloc(sizeof(*snap));

    (void)arg;
    while (!out_stop && snap != NULL) {
        usleep(250000);
        uint64_t now = bench_now_ns();
        if (!tty && now - last_line < 5000000000ull) {
            continue;
        }
        last_line = now;
        pthread_mutex_lock(&out_mu);
        if (bench_live_now.name[0] == '\0') {
            pthread_mutex_unlock(&out_mu);
            continue;
        }
        double el = (double)(now - bench_live_now.t0_ns) / 1e9;
        uint64_t ok = bench_load(&bench_live_now.ok), failed = bench_load(&bench_live_now.failed);
        double p99 = 0;
        if (bench_live_now.lat != NULL) {
            bench_hist_snapshot(snap, bench_live_now.lat);
            p99 = bench_hist_pct(snap, 99) / 1e6;
        }
        fprintf(stderr, "%s%-18s %5.1f/%-5.1f s  ok %-9llu failed %-6llu %9.0f/s  p99 %7.3f ms%s",
                tty ? "\r" : "", bench_live_now.name, el, (double)bench_live_now.dur_ns / 1e9,
                (unsigned long long)ok, (unsigned long long)failed, el > 0 ? (double)ok / el : 0,
                p99, tty ? "   " : "\n");
        pthread_mutex_unlock(&out_mu);
    }
    if (tty) {
        fprintf(stderr, "\r%100s\r", "");
    }
    free(snap);
    return NULL;
}

int bench_progress_start(void)
{
    out_stop = 0;
    if (pthread_create(&out_thread, NULL, out_progress, NULL) != 0) {
        return -1;
    }
    out_running = true;
    return 0;
}

void bench_progress_stop(void)
{
    if (out_running) {
        out_stop = 1;
        pthread_join(out_thread, NULL);
        out_running = false;
    }
}

/* ---- table ------------------------------------------------------------------------------------
 */

static double out_err_rate(const bench_result *r)
{
    return r->total > 0 ? (double)r->failed / (double)r->total : 0.0;
}

void bench_print_table(const bench_report *rep, FILE *out)
{
    fprintf(out,
            "\nhsbus-bench: %s, %s form, %d trial(s); reference (raw nng REQ/REP, ipc, 16 in "
            "flight, %d B): %.0f rt/s\n",
            rep->url, rep->short_form ? "short" : "full", rep->trials, BENCH_BODY_LEN,
            rep->ref_rate);
    fprintf(out, "machine load (1 min) before %.2f, after %.2f\n\n", rep->load1_before,
            rep->load1_after);
    fprintf(out, "%-18s %11s %-5s %6s %9s %9s %7s %7s | %8s %8s %8s %8s %8s %8s (ms)\n", "workload",
            "rate", "unit", "x ref", "total", "ok", "failed", "err%", "mean", "p50", "p90", "p95",
            "p99", "p99.9");
    for (size_t i = 0; i < rep->n_res; i++) {
        const bench_result *r = rep->res[i];
        if (!r->available) {
            fprintf(out, "%-18s %11s  unavailable: %s\n", r->name, "-", r->note);
            continue;
        }
        fprintf(out, "%-18s %11.0f %-5s %6.3f %9llu %9llu %7llu %7.3f |", r->name, r->rate, r->unit,
                r->ratio, (unsigned long long)r->total, (unsigned long long)r->ok,
                (unsigned long long)r->failed, out_err_rate(r) * 100);
        if (r->lat.count > 0) {
            fprintf(out, " %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f\n", bench_hist_mean(&r->lat) / 1e6,
                    bench_hist_pct(&r->lat, 50) / 1e6, bench_hist_pct(&r->lat, 90) / 1e6,
                    bench_hist_pct(&r->lat, 95) / 1e6, bench_hist_pct(&r->lat, 99) / 1e6,
                    bench_hist_pct(&r->lat, 99.9) / 1e6);
        } else {
            fprintf(out, " %8s\n", "-");
        }
        if (r->n_extra > 0 || r->note[0] != '\0') {
            fprintf(out, "%18s ", "");
            for (size_t k = 0; k < r->n_extra; k++) {
                fprintf(out, " %s=%.6g", r->extra[k].key, r->extra[k].value);
            }
            if (r->note[0] != '\0') {
                fprintf(out, "  note: %s", r->note);
            }
            fprintf(out, "\n");
        }
    }
    fprintf(out, "\nrate: succeeded per second of wall-clock time in the measured window. x ref: "
                 "rate / the reference\nrate of the same trial (trial_ref; the reference line "
                 "shows the median trial). Latency from the\nsend, or from the scheduled send "
                 "for open-loop loads and scenarios; priority: critical messages.\n");
}

/* ---- JSON -------------------------------------------------------------------------------------
 */

static void out_json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

static void out_json_num(FILE *f, double v)
{
    if (isfinite(v)) {
        fprintf(f, "%.6g", v);
    } else {
        fprintf(f, "null");
    }
}

static void out_cpu_model(char *buf, size_t cap)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];

    snprintf(buf, cap, "unknown");
    if (f == NULL) {
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            if (p != NULL) {
                p += 2;
                p[strcspn(p, "\n")] = '\0';
                snprintf(buf, cap, "%s", p);
            }
            break;
        }
    }
    fclose(f);
}

int bench_write_json(const bench_report *rep, const char *path)
{
    FILE *f = fopen(path, "w");
    char cpu[128];

    if (f == NULL) {
        perror(path);
        return -1;
    }
    out_cpu_model(cpu, sizeof(cpu));
    fprintf(
        f,
        "{\n  \"tool\": \"hsbus-bench\",\n  \"body_bytes\": %d,\n  \"machine\": {\"nproc\": %ld, "
        "\"cpu\": ",
        BENCH_BODY_LEN, sysconf(_SC_NPROCESSORS_ONLN));
    out_json_str(f, cpu);
    fprintf(f, ", \"load1_before\": %.2f, \"load1_after\": %.2f},\n", rep->load1_before,
            rep->load1_after);
    fprintf(f, "  \"url\": ");
    out_json_str(f, rep->url);
    fprintf(f, ",\n  \"short\": %s,\n  \"trials\": %d,\n  \"reference_rate\": ",
            rep->short_form ? "true" : "false", rep->trials);
    out_json_num(f, rep->ref_rate);
    fprintf(f, ",\n  \"results\": [");
    for (size_t i = 0; i < rep->n_res; i++) {
        const bench_result *r = rep->res[i];
        fprintf(f, "%s\n    {\"name\": ", i ? "," : "");
        out_json_str(f, r->name);
        fprintf(f, ", \"what\": ");
        out_json_str(f, r->what);
        fprintf(f, ", \"unit\": ");
        out_json_str(f, r->unit);
        fprintf(f, ", \"available\": %s, \"note\": ", r->available ? "true" : "false");
        out_json_str(f, r->note);
        fprintf(f,
                ",\n     \"secs\": %.3f, \"offered\": %.1f, \"total\": %llu, \"ok\": %llu, "
                "\"failed\": %llu, \"error_rate\": ",
                r->secs, r->offered, (unsigned long long)r->total, (unsigned long long)r->ok,
                (unsigned long long)r->failed);
        out_json_num(f, out_err_rate(r));
        fprintf(f, ", \"rate\": ");
        out_json_num(f, r->rate);
        fprintf(f, ", \"ratio\": ");
        out_json_num(f, r->ratio);
        fprintf(f, ", \"trial\": %d", r->trial);
        if (r->lat.count > 0) {
            fprintf(f,
                    ",\n     \"latency_ms\": {\"count\": %llu, \"mean\": %.4f, \"p50\": %.4f, "
                    "\"p90\": %.4f, \"p95\": %.4f, \"p99\": %.4f, \"p99.9\": %.4f, \"max\": "
                    "%.4f}",
                    (unsigned long long)r->lat.count, bench_hist_mean(&r->lat) / 1e6,
                    bench_hist_pct(&r->lat, 50) / 1e6, bench_hist_pct(&r->lat, 90) / 1e6,
                    bench_hist_pct(&r->lat, 95) / 1e6, bench_hist_pct(&r->lat, 99) / 1e6,
                    bench_hist_pct(&r->lat, 99.9) / 1e6, (double)r->lat.max_ns / 1e6);
        }
        fprintf(f, ",\n     \"extra\": {");
        for (size_t k = 0; k < r->n_extra; k++) {
            fprintf(f, "%s", k ? ", " : "");
            out_json_str(f, r->extra[k].key);
            fprintf(f, ": ");
            out_json_num(f, r->extra[k].value);
        }
        fprintf(f, "},\n     \"series_step_s\": %.2f, \"series\": [", BENCH_SERIES_STEP);
        for (size_t k = 0; k < r->n_series; k++) {
            fprintf(f, "%s%u", k ? "," : "", r->series[k]);
        }
        fprintf(f, "]}");
    }
    fprintf(f, "\n  ]\n}\n");
    if (fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

/* ---- plot -------------------------------------------------------------------------------------
 */

int bench_write_plot(const bench_report *rep, const char *path, const char *tmpdir)
{
    static const double pcts[] = {0, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99};
    char dat[512], gp[512], cmd[2400];
    FILE *f = NULL, *g = NULL;
    int rc = -1;

    snprintf(dat, sizeof(dat), "%s/plot.dat", tmpdir);
    snprintf(gp, sizeof(gp), "%s/plot.gp", tmpdir);
    if ((f = fopen(dat, "w")) == NULL || (g = fopen(gp, "w")) == NULL) {
        perror("plot");
        goto out;
    }
    /* Data: one gnuplot index per workload with latencies, then one per workload with a series. */
    size_t n_lat = 0, n_ser = 0;
    for (size_t i = 0; i < rep->n_res; i++) {
        const bench_result *r = rep->res[i];
        if (!r->available || r->lat.count == 0) {
            continue;
        }
        fprintf(f, "# %s\n", r->name);
        for (size_t k = 0; k < sizeof(pcts) / sizeof(pcts[0]); k++) {
            fprintf(f, "%g %g\n", 1.0 / (1.0 - pcts[k] / 100.0),
                    bench_hist_pct(&r->lat, pcts[k]) / 1e6);
        }
        fprintf(f, "\n\n");
        n_lat++;
    }
    for (size_t i = 0; i < rep->n_res; i++) {
        const bench_result *r = rep->res[i];
        if (!r->available || r->n_series == 0) {
            continue;
        }
        fprintf(f, "# %s\n", r->name);
        for (size_t k = 0; k < r->n_series; k++) {
            fprintf(f, "%g %g\n", (double)(k + 1) * BENCH_SERIES_STEP,
                    r->series[k] > 0 ? r->series[k] / BENCH_SERIES_STEP : 0.5);
        }
        fprintf(f, "\n\n");
        n_ser++;
    }
    fprintf(g,
            "set terminal pngcairo size 1400,1000 noenhanced\n"
            "set output '%s'\n"
            "set multiplot layout 2,1\n"
            "set key outside right\n"
            "set grid\n",
            path);
    fprintf(g, "set title 'latency by percentile (ms; open loop from the scheduled send)'\n"
               "set logscale x\nset logscale y\nset xlabel 'percentile'\nset ylabel 'ms'\n"
               "set xtics ('0' 1, '50' 2, '90' 10, '99' 100, '99.9' 1000, '99.99' 10000)\n");
    size_t idx = 0;
    fprintf(g, "plot ");
    for (size_t i = 0; i < rep->n_res; i++) {
        const bench_result *r = rep->res[i];
        if (!r->available || r->lat.count == 0) {
            continue;
        }
        /* 8 colours x dash types x point types, so that 16 curves stay distinguishable. */
        fprintf(g, "%s'%s' index %zu with linespoints lc %zu dt %zu pt %zu title '%s'",
                idx ? ", " : "", dat, idx, idx % 8 + 1, idx / 8 + 1, idx % 13 + 1, r->name);
        idx++;
    }
    fprintf(g,
            "\nset title 'throughput over time (per %.2f s sample)'\n"
            "unset logscale x\nset xtics auto\nset xlabel 'seconds into the measured window'\n"
            "set ylabel 'per second'\n",
            BENCH_SERIES_STEP);
    fprintf(g, "plot ");
    for (size_t i = 0, s = 0; i < rep->n_res; i++) {
        const bench_result *r = rep->res[i];
        if (!r->available || r->n_series == 0) {
            continue;
        }
        fprintf(g, "%s'%s' index %zu with lines lc %zu dt %zu title '%s'", s ? ", " : "", dat,
                n_lat + s, s % 8 + 1, s / 8 + 1, r->name);
        s++;
    }
    fprintf(g, "\nunset multiplot\n");
    fclose(f);
    f = NULL;
    fclose(g);
    g = NULL;
    if (n_lat == 0 || n_ser == 0) {
        fprintf(stderr, "hsbus-bench: nothing to plot\n");
        goto out;
    }
    snprintf(cmd, sizeof(cmd),
             "gnuplot '%s' 2>'%s.err' || (sed -i 's/pngcairo/png/' '%s' && gnuplot '%s')", gp, gp,
             gp, gp);
    if (system(cmd) != 0) {
        fprintf(stderr, "hsbus-bench: gnuplot failed (script %s)\n", gp);
        goto out;
    }
    rc = 0;
out:
    if (f != NULL) {
        fclose(f);
    }
    if (g != NULL) {
        fclose(g);
    }
    return rc;
}

/* ---- gate -------------------------------------------------------------------------------------
 */

static const char *out_skip_ws(const char *p)
{
    while (*p != '\0' && isspace((unsigned char)*p)) {
        p++;
    }
    return p;
}

/* out_json_key returns a pointer just after `"key":` at the top of text, or NULL. */
static const char *out_json_key(const char *text, const char *key)
{
    char pat[80];

    snprintf(pat, sizeof(pat), "\"%s\"", key);
    const char *p = strstr(text, pat);
    if (p == NULL) {
        return NULL;
    }
    p = out_skip_ws(p + strlen(pat));
    return *p == ':' ? out_skip_ws(p + 1) : NULL;
}

/* out_json_string reads a string at p into buf and returns the position after it, or NULL. */
static const char *out_json_string(const char *p, char *buf, size_t cap)
{
    size_t n = 0;

    if (*p != '"') {
        return NULL;
    }
    for (p++; *p != '\0' && *p != '"'; p++) {
        if (n + 1 < cap) {
            buf[n++] = *p;
        }
    }
    buf[n] = '\0';
    return *p == '"' ? p + 1 : NULL;
}

static const bench_result *out_find(const bench_report *rep, const char *name)
{
    for (size_t i = 0; i < rep->n_res; i++) {
        if (strcmp(rep->res[i]->name, name) == 0) {
            return rep->res[i];
        }
    }
    return NULL;
}

int bench_compare(const bench_report *rep, const char *path)
{
    FILE *f = fopen(path, "r");
    char *text = NULL, name[BENCH_NAME_MAX];
    int failures = 0, checked = 0;

    if (f == NULL) {
        perror(path);
        return 2;
    }
    text = calloc(1, 65536);
    size_t len = text != NULL ? fread(text, 1, 65535, f) : 0;
    fclose(f);
    if (len == 0) {
        fprintf(stderr, "gate: %s is empty or unreadable\n", path);
        free(text);
        return 2;
    }
    const char *p = out_json_key(text, "tolerance");
    double tol = p != NULL ? strtod(p, NULL) : 0.4;
    p = out_json_key(text, "max_error_rate");
    double max_err = p != NULL ? strtod(p, NULL) : 0.001;
    fprintf(stderr, "\ngate: %s (a ratio fails below expected x %.2f)\n", path, 1 - tol);
    p = out_json_key(text, "ratios");
    if (p == NULL || *p != '{') {
        fprintf(stderr, "gate: %s has no \"ratios\" object\n", path);
        free(text);
        return 2;
    }
    for (p = out_skip_ws(p + 1); *p == '"';) {
        char *end;
        p = out_json_string(p, name, sizeof(name));
        if (p == NULL || *(p = out_skip_ws(p)) != ':') {
            break;
        }
        double want = strtod(p + 1, &end);
        p = out_skip_ws(end);
        p = *p == ',' ? out_skip_ws(p + 1) : p;
        const bench_result *r = out_find(rep, name);
        if (r == NULL) {
            fprintf(stderr, "gate: %-18s not run, skipped\n", name);
            continue;
        }
        if (!r->available) {
            fprintf(stderr, "gate: %-18s unavailable (%s), skipped\n", name, r->note);
            continue;
        }
        checked++;
        double floor = want * (1 - tol);
        bool bad = r->ratio < floor;
        failures += bad;
        fprintf(stderr, "gate: %-18s ratio %.3f expected %.3f floor %.3f  %s\n", name, r->ratio,
                want, floor,
                bad                           ? "REGRESSION"
                : r->ratio > want * (1 + tol) ? "ok (better than the baseline: update it)"
                                              : "ok");
    }
    p = out_json_key(text, "error_free");
    if (p != NULL && *p == '[') {
        for (p = out_skip_ws(p + 1); *p == '"';) {
            p = out_json_string(p, name, sizeof(name));
            if (p == NULL) {
                break;
            }
            p = out_skip_ws(p);
            p = *p == ',' ? out_skip_ws(p + 1) : p;
            const bench_result *r = out_find(rep, name);
            if (r == NULL || !r->available) {
                fprintf(stderr, "gate: %-18s not run, skipped\n", name);
                continue;
            }
            checked++;
            bool bad = out_err_rate(r) > max_err || r->ok == 0;
            failures += bad;
            fprintf(stderr, "gate: %-18s error rate %.4f%% (max %.4f%%)  %s\n", name,
                    out_err_rate(r) * 100, max_err * 100, bad ? "REGRESSION" : "ok");
        }
    }
    free(text);
    fprintf(stderr, "gate: %d checked, %d regression(s)\n", checked, failures);
    return failures > 0 ? 1 : 0;
}
