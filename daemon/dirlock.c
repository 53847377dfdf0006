/*
 * daemon/dirlock.c - exclusive flock(2) on hsbusd.lock in the run and data directories.
 */
#include "daemon/dirlock.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DIRLOCK_FILE "hsbusd.lock"

/* dirlock_holder reads the pid the holder wrote, or 0. */
static long dirlock_holder(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    long pid = 0;

    if (n > 0) {
        buf[n] = '\0';
        if (sscanf(buf, "%ld", &pid) != 1) {
            pid = 0;
        }
    }
    return pid;
}

/* dirlock_one locks dir's file into *fd. */
static hsb_err dirlock_one(const char *dir, int *fd, char *err, size_t errlen)
{
    char path[4096 + sizeof(DIRLOCK_FILE) + 1];
    char pid[32];
    int f, n;

    snprintf(path, sizeof(path), "%s/%s", dir, DIRLOCK_FILE);
    /* O_CLOEXEC: an agent plugin that forks must not carry the lock into its child. */
    f = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (f < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return HSB_EIO;
    }
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long holder = dirlock_holder(f);
        if (e == EWOULDBLOCK) {
            snprintf(err, errlen, "%s is in use by another hsbusd (pid %ld, lock %s)", dir, holder,
                     path);
        } else {
            snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
        }
        close(f);
        return e == EWOULDBLOCK ? HSB_EBUSY : HSB_EIO;
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(f, 0) != 0 || pwrite(f, pid, (size_t)n, 0) != n) {
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        close(f);
        return HSB_EIO;
    }
    *fd = f;
    return HSB_OK;
}

hsb_err dirlock_acquire(dirlock *l, const char *const *dirs, size_t n, char *err, size_t errlen)
{
    struct stat st[DIRLOCK_MAX];

    memset(l, 0, sizeof(*l));
    if (n > DIRLOCK_MAX) {
        snprintf(err, errlen, "too many directories to lock");
        return HSB_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        bool seen = false;
        hsb_err rc;

        if (stat(dirs[i], &st[i]) != 0) {
            snprintf(err, errlen, "cannot stat %s: %s", dirs[i], strerror(errno));
            dirlock_release(l);
            return HSB_EIO;
        }
        for (size_t j = 0; j < i; j++) {
            seen |= st[j].st_dev == st[i].st_dev && st[j].st_ino == st[i].st_ino;
        }
        if (seen) {
            continue; /* a second flock of the same file from this process would fail */
        }
        rc = dirlock_one(dirs[i], &l->fds[l->n], err, errlen);
        if (rc != HSB_OK) {
            dirlock_release(l);
            return rc;
        }
        l->n++;
    }
    return HSB_OK;
}

void dirlock_release(dirlock *l)
{
    for (size_t i = 0; i < l->n; i++) {
        close(l->fds[i]); /* closing the only descriptor releases the flock */
    }
    l->n = 0;
}
