/*
 * tests/integration/harness.h - start and stop a real hsbusd for black-box tests.
 *
 * Each daemon gets its own temporary directory (run/, var/, hsbusd.log) so tests never share
 * state. The binary is found through the HSBUSD environment variable (meson sets it); setting
 * HSB_TEST_WRAPPER (e.g. "valgrind --leak-check=full ...") runs the daemon under that wrapper.
 *
 * Threads: test thread only. ith_start and ith_stop block (bounded by their timeouts).
 */
#ifndef HSB_TESTS_HARNESS_H
#define HSB_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct ith_daemon {
    pid_t pid;
    char dir[256];
    char url[320];   /* ipc://<dir>/run/agents.sock */
    char log[320];   /* <dir>/hsbusd.log */
    int exit_status; /* after ith_stop: the exit code, or 128 + signal */
} ith_daemon;

/*
 * ith_start starts hsbusd with -r DIR/run -d DIR/var and the given "section.key=value" overrides
 * (NULL-terminated, may be NULL), waits up to 20 s for its agent socket to accept a connection.
 * Returns false (and prints the log) if it does not come up.
 */
bool ith_start(ith_daemon *d, const char *const *sets);

/* ith_stop sends SIGTERM and waits up to 60 s (then SIGKILL). Returns the exit code (128 + signal
 * if killed). Removes the temporary directory unless keep. */
int ith_stop(ith_daemon *d, bool keep);

/* ith_kill sends SIGKILL and reaps the daemon. The directory stays (for a restart). */
void ith_kill(ith_daemon *d);

/* ith_restart starts a new daemon on the same directory (after ith_kill). */
bool ith_restart(ith_daemon *d, const char *const *sets);

/* ith_log_contains reports whether the daemon's log holds needle. */
bool ith_log_contains(const ith_daemon *d, const char *needle);

/* ith_print_log writes the daemon's log to stderr (for failing tests). */
void ith_print_log(const ith_daemon *d);

/* ith_sleep_ms sleeps; tests use it only to let time pass for deadlines, never to assert timings.
 */
void ith_sleep_ms(unsigned ms);

#endif
