/*
 * tests/integration/harness.c - fork/exec hsbusd in a temporary directory.
 */
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>

void ith_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool ith_spawn(ith_daemon *d, const char *const *sets)
{
    const char *bin = getenv("HSBUSD");
    if (bin == NULL) {
        bin = "daemon/hsbusd";
    }
    char run[300], var[300];
    snprintf(run, sizeof(run), "%s/run", d->dir);
    snprintf(var, sizeof(var), "%s/var", d->dir);

    const char *argv[128];
    size_t n = 0;
    char *wrap = NULL;
    const char *w = getenv("HSB_TEST_WRAPPER");
    if (w != NULL && w[0] != '\0') {
        wrap = strdup(w);
        for (char *tok = strtok(wrap, " "); tok != NULL && n < 32; tok = strtok(NULL, " ")) {
            argv[n++] = tok;
        }
    }
    argv[n++] = bin;
    argv[n++] = "-r";
    argv[n++] = run;
    argv[n++] = "-d";
    argv[n++] = var;
    /* Tests run in parallel: no fixed metrics port unless a test asks for one (later --set
     * overrides win). */
    argv[n++] = "--set";
    argv[n++] = "metrics.enabled=false";
    for (size_t i = 0; sets != NULL && sets[i] != NULL && n < 120; i++) {
        argv[n++] = "--set";
        argv[n++] = sets[i];
    }
    argv[n] = NULL;

    pid_t pid = fork();
    if (pid < 0) {
        free(wrap);
        return false;
    }
    if (pid == 0) {
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, STDERR_FILENO);
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    free(wrap);
    d->pid = pid;
    return true;
}

static bool ith_wait_ready(ith_daemon *d)
{
    /* Ready when a REQ socket can dial the agent socket (the file alone may be stale). */
    for (int i = 0; i < 400; i++) {
        int status;
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            fprintf(stderr, "hsbusd exited during start-up (status %d)\n", status);
            return false;
        }
        nng_socket s;
        if (nng_req0_open(&s) == 0) {
            int rv = nng_dial(s, d->url, NULL, 0);
            nng_close(s);
            if (rv == 0) {
                return true;
            }
        }
        ith_sleep_ms(50);
    }
    return false;
}

bool ith_start(ith_daemon *d, const char *const *sets)
{
    memset(d, 0, sizeof(*d));
    snprintf(d->dir, sizeof(d->dir), "/tmp/hsbus-it-XXXXXX");
    if (mkdtemp(d->dir) == NULL) {
        return false;
    }
    snprintf(d->url, sizeof(d->url), "ipc://%s/run/agents.sock", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/hsbusd.log", d->dir);
    return ith_restart(d, sets);
}

bool ith_restart(ith_daemon *d, const char *const *sets)
{
    if (!ith_spawn(d, sets)) {
        return false;
    }
    if (!ith_wait_ready(d)) {
        ith_print_log(d);
        if (d->pid > 0) {
            ith_kill(d);
        }
        return false;
    }
    return true;
}

static int ith_reap(ith_daemon *d, int timeout_ms)
{
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        int status;
        pid_t r = waitpid(d->pid, &status, WNOHANG);
        if (r == d->pid) {
            d->pid = 0;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        }
        ith_sleep_ms(20);
    }
    return -1;
}

void ith_kill(ith_daemon *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        d->exit_status = ith_reap(d, 10000);
    }
}

int ith_stop(ith_daemon *d, bool keep)
{
    int code = -1;
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        code = ith_reap(d, 60000);
        if (code < 0) {
            kill(d->pid, SIGKILL);
            code = ith_reap(d, 10000);
            code = 128 + SIGKILL;
        }
    }
    d->exit_status = code;
    if (code != 0) {
        ith_print_log(d);
    }
    if (!keep) {
        char cmd[300];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not remove %s\n", d->dir);
        }
    }
    return code;
}

bool ith_log_contains(const ith_daemon *d, const char *needle)
{
    FILE *f = fopen(d->log, "r");
    if (f == NULL) {
        return false;
    }
    char line[4096];
    bool found = false;
    while (!found && fgets(line, sizeof(line), f) != NULL) {
        found = strstr(line, needle) != NULL;
    }
    fclose(f);
    return found;
}

void ith_print_log(const ith_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    if (f == NULL) {
        return;
    }
    fprintf(stderr, "---- %s ----\n", d->log);
    char line[4096];
    while (fgets(line, sizeof(line), f) != NULL) {
        fputs(line, stderr);
    }
    fprintf(stderr, "---- end ----\n");
    fclose(f);
}
