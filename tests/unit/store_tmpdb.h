/*
 * tests/unit/store_tmpdb.h - the temporary database file of the store tests: a fresh directory per
 * test (so tests never share a file) and its removal, WAL side files included.
 * Threads: the test's thread. Blocks on file I/O only.
 */
#ifndef HSB_TESTS_STORE_TMPDB_H
#define HSB_TESTS_STORE_TMPDB_H

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct store_tmpdb {
    char dir[64];
    char path[128]; /* <dir>/hsbus.db */
} store_tmpdb;

/* store_tmpdb_make creates /tmp/hsb-<tag>-XXXXXX. Returns 0, or -1 if mkdtemp fails. */
static inline int store_tmpdb_make(store_tmpdb *t, const char *tag)
{
    snprintf(t->dir, sizeof(t->dir), "/tmp/hsb-%s-XXXXXX", tag);
    if (mkdtemp(t->dir) == NULL) {
        return -1;
    }
    snprintf(t->path, sizeof(t->path), "%s/hsbus.db", t->dir);
    return 0;
}

/* store_tmpdb_remove deletes the database, its -wal, -shm and -journal files, and the directory. */
static inline void store_tmpdb_remove(store_tmpdb *t)
{
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    char p[160];
    for (size_t i = 0; i < sizeof(sfx) / sizeof(sfx[0]); i++) {
        snprintf(p, sizeof(p), "%s%s", t->path, sfx[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

#endif
