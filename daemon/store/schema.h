/*
 * daemon/store/schema.h - the versioned schema of the store database and its forward migrations.
 *
 * The schema is a list of migrations, applied in order. Each runs inside its own BEGIN IMMEDIATE
 * transaction together with the INSERT that records it in schema_version, so a crash leaves the
 * database either before or after a migration, never half-way. Opening a database that is already
 * current applies nothing (idempotent). A database whose version is newer than this binary knows
 * is refused rather than guessed at. docs/store.md describes every table.
 *
 * Threads: called by store_pool_open on the opening thread, on the write connection, before any
 * other thread uses the database. Blocks on disk I/O.
 */
#ifndef HSB_STORE_SCHEMA_H
#define HSB_STORE_SCHEMA_H

#include <sqlite3.h>

#include "proto/err.h"

/* The version this binary creates and expects. */
#define STORE_SCHEMA_VERSION 1

/*
 * store_schema_migrate brings db up to STORE_SCHEMA_VERSION. *applied (may be NULL) receives the
 * number of migrations it ran. Errors: HSB_EIO (SQLite failed; the failing migration was rolled
 * back), HSB_EINVAL (the database is newer than this binary).
 */
hsb_err store_schema_migrate(sqlite3 *db, int *applied);

/* store_schema_version reads the current version of db into *version (0: empty database).
 * Errors: HSB_EIO. */
hsb_err store_schema_version(sqlite3 *db, int *version);

#endif /* HSB_STORE_SCHEMA_H */
