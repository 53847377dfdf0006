/*
 * benches/hsbus_bench.c - hsbus-bench, the load generator of hsbus: command line, daemon and
 * child processes, trials. See docs/benchmarks.md for what each number means.
 *
 * One program, several roles (as nng's perf tools): without --role it is the bench; with
 * `--role nng-echo|echo-agent|sink` it is one of the processes the bench starts (exec'd from
 * /proc/self/exe, so each is a real separate process with its own nng socket or libhsbus client).
 *
 * A run: make a private temporary directory; start hsbusd there (or attach with --url); start the
 * raw nng echo server; then for each trial measure the reference and every selected workload, and
 * report for each workload the trial with the median ratio to that trial's reference (so one noisy
 * moment on a shared 2-core machine neither fails nor flatters the gate). Seed scenarios run once.
 * Finally print the table and write --json, --plot and the --compare verdict.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <hsbus.h>

#include "bench.h"

#ifndef HSBUS_BENCH_HSBUSD
#define HSBUS_BENCH_HSBUSD ""
#endif

#define MAIN_SETS_MAX   32
#define MAIN_TRIALS_MAX 20

volatile int bench_interrupted;

typedef enum main_kind {
    MAIN_REQREP_C1,
    MAIN_REQREP_C16,
    MAIN_REQREP_C16_THREADS,
    MAIN_OPEN_2K,
    MAIN_OPEN_10K,
    MAIN_ONEWAY,
    MAIN_ONEWAY_BATCH,
    MAIN_DURABLE,
    MAIN_BUILTIN,
    MAIN_PRIORITY,
    MAIN_SCENARIO,
} main_kind;

typedef struct main_work {
    const char *name; /* as given to --workloads and as the result is named */
    main_kind kind;
    const char *scenario;
    const char *groups; /* space-separated groups it belongs to */
} main_work;

static const main_work main_works[] = {
    {"reqrep-c1", MAIN_REQREP_C1, NULL, "all workloads"},
    {"reqrep-c16", MAIN_REQREP_C16, NULL, "all workloads gate"},
    {"reqrep-c16-threads", MAIN_REQREP_C16_THREADS, NULL, "all workloads"},
    {"reqrep-open-2k", MAIN_OPEN_2K, NULL, "all workloads"},
    {"reqrep-open-10k", MAIN_OPEN_10K, NULL, "all workloads"},
    {"oneway", MAIN_ONEWAY, NULL, "all workloads gate"},
    {"oneway-batch", MAIN_ONEWAY_BATCH, NULL, "all workloads gate"},
    {"durable", MAIN_DURABLE, NULL, "all workloads gate"},
    {"builtin-c16", MAIN_BUILTIN, NULL, "all workloads gate"},
    {"priority", MAIN_PRIORITY, NULL, "all workloads gate"},
    {"light", MAIN_SCENARIO, "light", "all scenarios gate"},
    {"moderate", MAIN_SCENARIO, "moderate", "all scenarios gate"},
    {"heavy", MAIN_SCENARIO, "heavy", "all scenarios gate"},
    {"stress", MAIN_SCENARIO, "stress", "all scenarios"},
    {"spike", MAIN_SCENARIO, "spike", "all scenarios"},
    {"soak", MAIN_SCENARIO, "soak", "all scenarios"},
};
#define MAIN_N_WORKS (sizeof(main_works) / sizeof(main_works[0]))

static void main_usage(FILE *out)
{
    fprintf(
        out,
        "usage: hsbus-bench [options]\n"
        "  --hsbusd PATH        daemon to start (default: the one built with this bench)\n"
        "  --url URL            attach to a running daemon instead (no RSS watch)\n"
        "  --set SEC.KEY=VAL    pass --set to the started daemon (repeatable)\n"
        "  -w, --workloads LIST comma-separated names or groups (default: all):\n"
        "                       groups all, workloads, scenarios, gate; names reqrep-c1,\n"
        "                       reqrep-c16, reqrep-open-2k, reqrep-open-10k, oneway,\n"
        "                       oneway-batch, durable, builtin-c16, priority, light, moderate,\n"
        "                       heavy, stress, spike, soak\n"
        "  -t, --duration SECS  measured seconds per workload (default 10; 3 with --short)\n"
        "  -s, --short          short forms of everything (CI)\n"
        "  -n, --trials N       repeat reference + workloads N times, report each median ratio\n"
        "  -p, --producers N    producer threads (each its own client) of oneway, oneway-batch\n"
        "                       and durable, 1..16 (default 4)\n"
        "  --json FILE          write every result as JSON\n"
        "  --plot FILE.png      latency percentile curves and throughput over time (gnuplot)\n"
        "  --compare FILE       gate against a baseline (benches/baseline.json); exit 1 on\n"
        "                       a regression\n"
        "  --keep               keep the temporary directory (daemon and agent logs)\n"
        "  --selftest           check the histogram and the gate on synthetic data, exit\n"
        "  -h, --help           this text\n"
        "Exit: 0 done, 1 regression, 2 usage, 3 setup failed (daemon, reference, a workload).\n");
}

/* ---- processes --------------------------------------------------------------------------------
 */

pid_t bench_spawn(char *const argv[], const char *logpath)
{
    pid_t pid = fork();

    if (pid != 0) {
        return pid; /* parent (or -1) */
    }
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGINT, SIG_DFL);
    signal(SIGPIPE, SIG_DFL);
    if (logpath != NULL) {
        int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            dup2(fd, STDERR_FILENO);
            close(fd);
        }
    }
    execv(argv[0], argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int bench_stop(pid_t pid)
{
    int status = 0;

    if (pid <= 0) {
        return -1;
    }
    kill(pid, SIGTERM);
    for (int i = 0; i < 500; i++) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        if (w < 0) {
            return -1;
        }
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return 137;
}

uint64_t bench_rss_kb(pid_t pid)
{
    char path[64], line[256];
    uint64_t kb = 0;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmRSS:", 6) == 0) {
            kb = strtoull(line + 6, NULL, 10);
            break;
        }
    }
    fclose(f);
    return kb;
}

static double main_load1(void)
{
    double l = 0;
    FILE *f = fopen("/proc/loadavg", "r");

    if (f != NULL) {
        if (fscanf(f, "%lf", &l) != 1) {
            l = 0;
        }
        fclose(f);
    }
    return l;
}

static void main_on_sigint(int sig)
{
    (void)sig;
    bench_interrupted = 1;
}

/* main_wait_daemon connects and says hello until the daemon answers (up to 10 s). */
static int main_wait_daemon(const char *url, pid_t pid)
{
    hsbus_opts o = {.agent = "bench-probe", .timeout_ms = 500};

    for (int i = 0; i < 100; i++) {
        hsbus_client *c = NULL;
        if (hsbus_connect(url, &o, &c) == HSBUS_OK) {
            hsbus_close(&c);
            return 0;
        }
        if (pid > 0 && waitpid(pid, NULL, WNOHANG) == pid) {
            return -1;
        }
        usleep(100000);
    }
    return -1;
}

static void main_rm_tree(const char *dir)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "hsbus-bench: could not remove %s\n", dir);
    }
}

/* ---- selection --------------------------------------------------------------------------------
 */

static bool main_in_group(const main_work *w, const char *g)
{
    size_t n = strlen(g);
    for (const char *p = w->groups; (p = strstr(p, g)) != NULL; p += n) {
        if ((p == w->groups || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) {
            return true;
        }
    }
    return false;
}

static int main_select(const char *list, bool sel[MAIN_N_WORKS])
{
    char buf[1024], *save = NULL;

    snprintf(buf, sizeof(buf), "%s", list);
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        bool found = false;
        for (size_t i = 0; i < MAIN_N_WORKS; i++) {
            if (strcmp(main_works[i].name, tok) == 0 || main_in_group(&main_works[i], tok)) {
                sel[i] = found = true;
            }
        }
        if (!found) {
            fprintf(stderr, "hsbus-bench: unknown workload or group: %s\n", tok);
            return -1;
        }
    }
    return 0;
}

static int main_run_one(bench_env *e, const main_work *w, bench_result *r)
{
    switch (w->kind) {
    case MAIN_REQREP_C1:
        return bench_w_reqrep_closed(e, 1, WORK_ASYNC, r);
    case MAIN_REQREP_C16:
        return bench_w_reqrep_closed(e, 16, WORK_ASYNC, r);
    case MAIN_REQREP_C16_THREADS:
        return bench_w_reqrep_closed(e, 16, WORK_THREADS, r);
    case MAIN_OPEN_2K:
        return bench_w_reqrep_open(e, 2000, r);
    case MAIN_OPEN_10K:
        return bench_w_reqrep_open(e, 10000, r);
    case MAIN_ONEWAY:
        return bench_w_oneway(e, false, r);
    case MAIN_ONEWAY_BATCH:
        return bench_w_oneway(e, true, r);
    case MAIN_DURABLE:
        return bench_w_durable(e, r);
    case MAIN_BUILTIN:
        return bench_w_reqrep_closed(e, 16, WORK_BUILTIN, r);
    case MAIN_PRIORITY:
        return bench_w_priority(e, r);
    case MAIN_SCENARIO:
        return bench_w_scenario(e, w->scenario, r);
    }
    return -1;
}

/*
 * main_median picks, among the n trial results of one workload (NULL where it did not run), the
 * one with the median ratio (the reference: the median rate; an even count takes the lower
 * middle), records the spread on it, frees the others and clears their slots. The median is
 * robust in both directions: a best-of-N would favour the trials whose reference was slowed down.
 */
static int main_cmp_ratio(const void *a, const void *b)
{
    const bench_result *x = *(bench_result *const *)a, *y = *(bench_result *const *)b;
    return x->ratio < y->ratio ? -1 : x->ratio > y->ratio;
}

static bench_result *main_median(bench_result **rs, size_t n, bool by_rate)
{
    bench_result *ok[MAIN_TRIALS_MAX], *pick = NULL;
    size_t m = 0;

    for (size_t t = 0; t < n; t++) {
        if (rs[t] != NULL && rs[t]->available) {
            if (by_rate) {
                rs[t]->ratio = rs[t]->rate; /* sorted by rate; reset below */
            }
            ok[m++] = rs[t];
        }
    }
    if (m > 0) {
        qsort(ok, m, sizeof(ok[0]), main_cmp_ratio);
        pick = ok[(m - 1) / 2];
        if (m > 1) {
            bench_result_extra(pick, by_rate ? "rate_min" : "ratio_min", ok[0]->ratio);
            bench_result_extra(pick, by_rate ? "rate_max" : "ratio_max", ok[m - 1]->ratio);
        }
    } else {
        for (size_t t = 0; t < n && pick == NULL; t++) {
            pick = rs[t];
        }
    }
    for (size_t t = 0; t < n; t++) {
        if (rs[t] != pick) {
            free(rs[t]);
        }
        rs[t] = NULL;
    }
    if (pick != NULL && by_rate) {
        pick->ratio = 1.0;
    }
    return pick;
}

/* ---- roles ------------------------------------------------------------------------------------
 */

static int main_role(const char *role, const char *url, const char *name, int threads,
                     const char *stat)
{
    if (strcmp(role, "nng-echo") == 0) {
        return bench_ref_server(url, threads > 0 ? threads : 64);
    }
    if (name == NULL || stat == NULL) {
        fprintf(stderr, "hsbus-bench: --role %s needs --name and --stat\n", role);
        return 2;
    }
    if (strcmp(role, "echo-agent") == 0) {
        return bench_role_echo_agent(url, name, threads > 0 ? threads : 8, stat);
    }
    if (strcmp(role, "sink") == 0) {
        return bench_role_sink(url, name, threads > 0 ? threads : 2, stat);
    }
    fprintf(stderr, "hsbus-bench: unknown role %s\n", role);
    return 2;
}

/* ---- main -------------------------------------------------------------------------------------
 */

int main(int argc, char **argv)
{
    enum {
        O_HSBUSD = 256,
        O_URL,
        O_SET,
        O_JSON,
        O_PLOT,
        O_COMPARE,
        O_KEEP,
        O_ROLE,
        O_NAME,
        O_THREADS,
        O_STAT,
        O_SELFTEST
    };
    static const struct option opts[] = {
        {"hsbusd", required_argument, NULL, O_HSBUSD},
        {"url", required_argument, NULL, O_URL},
        {"set", required_argument, NULL, O_SET},
        {"workloads", required_argument, NULL, 'w'},
        {"duration", required_argument, NULL, 't'},
        {"short", no_argument, NULL, 's'},
        {"trials", required_argument, NULL, 'n'},
        {"json", required_argument, NULL, O_JSON},
        {"plot", required_argument, NULL, O_PLOT},
        {"compare", required_argument, NULL, O_COMPARE},
        {"keep", no_argument, NULL, O_KEEP},
        {"role", required_argument, NULL, O_ROLE},
        {"name", required_argument, NULL, O_NAME},
        {"threads", required_argument, NULL, O_THREADS},
        {"stat", required_argument, NULL, O_STAT},
        {"producers", required_argument, NULL, 'p'},
        {"selftest", no_argument, NULL, O_SELFTEST},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *hsbusd = NULL, *url = NULL, *list = "all", *json = NULL, *plot = NULL;
    const char *compare = NULL, *role = NULL, *name = NULL, *stat = NULL;
    const char *sets[MAIN_SETS_MAX];
    size_t n_sets = 0;
    double duration = 0;
    int trials = 1, producers = 4, threads = 0, ch, code = 3, setup_failed = 0;
    bool short_form = false, keep = false, selftest = false;
    bool sel[MAIN_N_WORKS] = {false};

    while ((ch = getopt_long(argc, argv, "w:t:sn:p:h", opts, NULL)) != -1) {
        switch (ch) {
        case O_HSBUSD:
            hsbusd = optarg;
            break;
        case O_URL:
            url = optarg;
            break;
        case O_SET:
            if (n_sets == MAIN_SETS_MAX) {
                fprintf(stderr, "hsbus-bench: too many --set\n");
                return 2;
            }
            sets[n_sets++] = optarg;
            break;
        case 'w':
            list = optarg;
            break;
        case 't':
            duration = strtod(optarg, NULL);
            break;
        case 's':
            short_form = true;
            break;
        case 'n':
            trials = atoi(optarg);
            break;
        case 'p':
            producers = atoi(optarg);
            break;
        case O_JSON:
            json = optarg;
            break;
        case O_PLOT:
            plot = optarg;
            break;
        case O_COMPARE:
            compare = optarg;
            break;
        case O_KEEP:
            keep = true;
            break;
        case O_ROLE:
            role = optarg;
            break;
        case O_NAME:
            name = optarg;
            break;
        case O_THREADS:
            threads = atoi(optarg);
            break;
        case O_STAT:
            stat = optarg;
            break;
        case O_SELFTEST:
            selftest = true;
            break;
        case 'h':
            main_usage(stdout);
            return 0;
        default:
            main_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "hsbus-bench: unexpected argument: %s\n", argv[optind]);
        return 2;
    }
    if (role != NULL) {
        if (url == NULL) {
            fprintf(stderr, "hsbus-bench: --role needs --url\n");
            return 2;
        }
        return main_role(role, url, name, threads, stat);
    }
    if (trials < 1 || trials > MAIN_TRIALS_MAX || producers < 1 || producers > 16 || duration < 0 ||
        main_select(list, sel) != 0) {
        main_usage(stderr);
        return 2;
    }
    if (duration == 0) {
        duration = short_form ? 3 : 10;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = main_on_sigint};
    sigaction(SIGINT, &sa, NULL);

    /* The executable, for the roles; the daemon next to it in the build tree by default. */
    static char self[4096], dflt[4096], tmpdir[] = "/tmp/hsbus-bench.XXXXXX";
    static char daemon_url[700], ref_url[700], logp[600], runp[600], datap[600];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (sl <= 0) {
        perror("readlink /proc/self/exe");
        return 3;
    }
    self[sl] = '\0';
    if (hsbusd == NULL) {
        if (HSBUS_BENCH_HSBUSD[0] != '\0' && access(HSBUS_BENCH_HSBUSD, X_OK) == 0) {
            hsbusd = HSBUS_BENCH_HSBUSD;
        } else {
            char copy[4096];
            snprintf(copy, sizeof(copy), "%s", self);
            snprintf(dflt, sizeof(dflt), "%s/../daemon/hsbusd", dirname(copy));
            hsbusd = dflt;
        }
    }
    if (mkdtemp(tmpdir) == NULL) {
        perror("mkdtemp");
        return 3;
    }
    if (selftest) {
        int rc = bench_selftest(tmpdir);
        rmdir(tmpdir);
        return rc;
    }

    bench_env env = {.self = "/proc/self/exe", /* works even if the file is rebuilt meanwhile */
                     .tmpdir = tmpdir,
                     .short_form = short_form,
                     .secs = duration,
                     .producers = producers};
    bench_report rep = {.trials = trials, .short_form = short_form, .duration = duration};
    bench_result **best = calloc(MAIN_N_WORKS + 1, sizeof(*best));
    bench_result **all = calloc((MAIN_N_WORKS + 1) * MAIN_TRIALS_MAX, sizeof(*all));
    bench_result *cur = NULL;
    pid_t daemon_pid = 0, ref_pid = 0;
    if (best == NULL || all == NULL) {
        goto out;
    }
    rep.load1_before = main_load1();

    if (url == NULL) {
        char *dargv[10 + 2 * MAIN_SETS_MAX];
        size_t k = 0;
        snprintf(runp, sizeof(runp), "%s/run", tmpdir);
        snprintf(datap, sizeof(datap), "%s/var", tmpdir);
        snprintf(logp, sizeof(logp), "%s/hsbusd.log", tmpdir);
        mkdir(runp, 0700);
        mkdir(datap, 0700);
        dargv[k++] = (char *)hsbusd;
        dargv[k++] = "-r";
        dargv[k++] = runp;
        dargv[k++] = "-d";
        dargv[k++] = datap;
        dargv[k++] = "-l";
        dargv[k++] = "warn";
        dargv[k++] = "--set"; /* a free port: other daemons may hold the default one */
        dargv[k++] = "metrics.port=0";
        for (size_t i = 0; i < n_sets; i++) {
            dargv[k++] = "--set";
            dargv[k++] = (char *)sets[i];
        }
        dargv[k] = NULL;
        daemon_pid = bench_spawn(dargv, logp);
        snprintf(daemon_url, sizeof(daemon_url), "ipc://%s/agents.sock", runp);
        url = daemon_url;
        if (daemon_pid < 0 || main_wait_daemon(url, daemon_pid) != 0) {
            fprintf(stderr, "hsbus-bench: %s did not start (log: %s)\n", hsbusd, logp);
            keep = true;
            goto out;
        }
    } else if (main_wait_daemon(url, 0) != 0) {
        fprintf(stderr, "hsbus-bench: nothing answers at %s\n", url);
        goto out;
    }
    env.url = rep.url = url;
    env.daemon_pid = daemon_pid;

    snprintf(ref_url, sizeof(ref_url), "ipc://%s/ref.sock", tmpdir);
    snprintf(logp, sizeof(logp), "%s/nng-echo.log", tmpdir);
    char *rargv[] = {"/proc/self/exe", "--role",    "nng-echo", "--url",
                     ref_url,          "--threads", "64",       NULL};
    ref_pid = bench_spawn(rargv, logp);
    if (ref_pid < 0) {
        goto out;
    }
    bench_progress_start();

    /* Trials: the reference, then every selected workload; all results kept, the median chosen. */
    for (int t = 0; t < trials && !bench_interrupted; t++) {
        cur = calloc(1, sizeof(*cur));
        if (cur == NULL || bench_ref_client(ref_url, 16, duration, cur) != 0) {
            fprintf(stderr, "hsbus-bench: reference failed: %s\n", cur ? cur->note : "");
            goto out_progress;
        }
        double ref = cur->rate;
        cur->trial = t;
        bench_result_extra(cur, "load1", main_load1());
        all[t] = cur;
        cur = NULL;
        for (size_t i = 0; i < MAIN_N_WORKS && !bench_interrupted; i++) {
            if (!sel[i] || (main_works[i].kind == MAIN_SCENARIO && t > 0)) {
                continue;
            }
            cur = calloc(1, sizeof(*cur));
            if (cur == NULL) {
                goto out_progress;
            }
            env.secs = duration;
            if (main_run_one(&env, &main_works[i], cur) != 0) {
                setup_failed++;
                if (cur->note[0] == '\0') {
                    snprintf(cur->note, sizeof(cur->note), "could not be set up");
                }
            }
            snprintf(cur->name, sizeof(cur->name), "%s", main_works[i].name);
            cur->trial = t;
            cur->ratio = ref > 0 ? cur->rate / ref : 0;
            bench_result_extra(cur, "trial_ref", ref);
            bench_result_extra(cur, "load1", main_load1()); /* the machine's load at its end */
            all[(i + 1) * MAIN_TRIALS_MAX + (size_t)t] = cur;
            cur = NULL;
        }
    }
    for (size_t i = 0; i <= MAIN_N_WORKS; i++) {
        best[i] = main_median(&all[i * MAIN_TRIALS_MAX], (size_t)trials, i == 0);
    }
    bench_progress_stop();
    rep.load1_after = main_load1();
    bench_result *shown[MAIN_N_WORKS + 1];
    rep.res = shown;
    for (size_t i = 0; i <= MAIN_N_WORKS; i++) {
        if (best[i] != NULL) {
            shown[rep.n_res++] = best[i];
        }
    }
    if (best[0] == NULL) {
        goto out;
    }
    rep.ref_rate = best[0]->rate;
    bench_print_table(&rep, stdout);
    fflush(stdout);
    code = 0;
    if (json != NULL && bench_write_json(&rep, json) != 0) {
        code = 3;
    }
    if (plot != NULL && bench_write_plot(&rep, plot, tmpdir) != 0) {
        code = 3;
    }
    if (compare != NULL) {
        int g = bench_compare(&rep, compare);
        code = g == 0 ? code : g == 1 ? 1 : 2;
    }
    if (setup_failed > 0) {
        fprintf(stderr, "hsbus-bench: %d workload(s) could not be set up\n", setup_failed);
        code = code == 0 ? 3 : code;
    }
    if (bench_interrupted) {
        code = code == 0 ? 130 : code;
    }
    goto out;
out_progress:
    bench_progress_stop();
out:
    free(cur);
    if (best != NULL) {
        for (size_t i = 0; i <= MAIN_N_WORKS; i++) {
            free(best[i]);
        }
        free(best);
    }
    if (all != NULL) {
        for (size_t i = 0; i < (MAIN_N_WORKS + 1) * MAIN_TRIALS_MAX; i++) {
            free(all[i]);
        }
        free(all);
    }
    if (ref_pid > 0) {
        bench_stop(ref_pid);
    }
    if (daemon_pid > 0) {
        int st = bench_stop(daemon_pid);
        if (st != 0) {
            fprintf(stderr, "hsbus-bench: hsbusd exited with status %d (log kept in %s)\n", st,
                    tmpdir);
            keep = true;
        }
    }
    if (keep) {
        fprintf(stderr, "hsbus-bench: kept %s\n", tmpdir);
    } else {
        main_rm_tree(tmpdir);
    }
    return code;
}
