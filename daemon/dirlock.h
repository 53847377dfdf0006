/*
 * daemon/dirlock.h - one daemon per run directory and per data directory.
 *
 * Two daemons on one data directory would both re-queue the same durable messages and both run
 * the built-in agents against one database; two on one run directory would fight over its sockets.
 * So hsbusd takes an exclusive flock(2) on `hsbusd.lock` in each directory before it opens
 * anything, and writes its pid there. The kernel drops the lock when the process exits, however it
 * exits (SIGKILL included), so a stale file never blocks a restart.
 *
 * Ownership: the caller owns the dirlock and releases it with dirlock_release. Threads: call from
 * the main thread during start-up and shutdown. Nothing blocks: a held lock fails at once.
 */
#ifndef HSB_DAEMON_DIRLOCK_H
#define HSB_DAEMON_DIRLOCK_H

#include <stddef.h>

#include "proto/err.h"

#define DIRLOCK_MAX 2 /* the run directory and the data directory */

typedef struct dirlock {
    int fds[DIRLOCK_MAX];
    size_t n;
} dirlock;

/*
 * dirlock_acquire locks `hsbusd.lock` in each of dirs[0..n) (n <= DIRLOCK_MAX; the directories
 * exist; a directory named twice, or two names of one directory, is locked once) and writes this
 * process's pid into each. On HSB_OK *l holds the locks. On failure it holds none, and err says
 * which directory and, when another process holds it, that process's pid.
 * Errors: HSB_EBUSY (another process holds a lock), HSB_EIO (the file cannot be opened or written).
 */
hsb_err dirlock_acquire(dirlock *l, const char *const *dirs, size_t n, char *err, size_t errlen);

/* dirlock_release unlocks and closes what *l holds (the files stay). Safe on a zeroed dirlock. */
void dirlock_release(dirlock *l);

#endif /* HSB_DAEMON_DIRLOCK_H */
