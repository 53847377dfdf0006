/*
 * daemon/store/schema.c - migrations. Append new migrations at the end; never edit a released one.
 */
#include "daemon/store/schema.h"

#include <stddef.h>

typedef struct store_schema_migration {
    int version;
    const char *sql;
} store_schema_migration;

static const store_schema_migration store_schema_migrations[] = {
    {1, "CREATE TABLE durable ("
        "  id          INTEGER PRIMARY KEY," /* the message id, unique per daemon */
        "  agent       TEXT NOT NULL,"       /* destination (envelope `to`), may be '' */
        "  lane        INTEGER NOT NULL,"    /* priority 0..3 */
        "  deadline    INTEGER NOT NULL,"    /* ms since the epoch */
        "  deliveries  INTEGER NOT NULL DEFAULT 0,"
        "  envelope    BLOB NOT NULL," /* hsb_enc_envelope output */
        "  enqueued_ms INTEGER NOT NULL);"
        "CREATE TABLE dead_letters ("
        "  id          INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  msg_id      INTEGER NOT NULL,"
        "  agent       TEXT NOT NULL,"
        "  reason      TEXT NOT NULL,"
        "  deliveries  INTEGER NOT NULL,"
        "  envelope    BLOB NOT NULL,"
        "  ts          INTEGER NOT NULL);"
        "CREATE INDEX dead_letters_msg ON dead_letters(msg_id);"
        "CREATE TABLE audit ("
        "  seq       INTEGER PRIMARY KEY,"
        "  ts        INTEGER NOT NULL,"
        "  event     TEXT NOT NULL,"
        "  detail    TEXT NOT NULL,"
        "  prev_hash BLOB NOT NULL,"
        "  hash      BLOB NOT NULL);"
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        "  BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;"
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        "  BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;"
        "CREATE TABLE kv ("
        "  ns         TEXT NOT NULL,"
        "  key        TEXT NOT NULL,"
        "  value      BLOB,"
        "  updated_ms INTEGER NOT NULL DEFAULT 0,"
        "  PRIMARY KEY (ns, key)) WITHOUT ROWID;"},
};

#define STORE_SCHEMA_N (sizeof(store_schema_migrations) / sizeof(store_schema_migrations[0]))

hsb_err store_schema_version(sqlite3 *db, int *version)
{
    sqlite3_stmt *st = NULL;
    hsb_err err = HSB_EIO;
    int rc;

    rc = sqlite3_exec(db,
                      "CREATE TABLE IF NOT EXISTS schema_version ("
                      "  version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL)",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) {
        goto out;
    }
    rc = sqlite3_prepare_v2(db, "SELECT coalesce(max(version), 0) FROM schema_version", -1, &st,
                            NULL);
    if (rc != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW) {
        goto out;
    }
    *version = sqlite3_column_int(st, 0);
    err = HSB_OK;
out:
    sqlite3_finalize(st);
    return err;
}

static hsb_err store_schema_apply(sqlite3 *db, const store_schema_migration *m)
{
    sqlite3_stmt *st = NULL;

    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        return HSB_EIO;
    }
    if (sqlite3_exec(db, m->sql, NULL, NULL, NULL) != SQLITE_OK) {
        goto rollback;
    }
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO schema_version(version, applied_ms) "
                           "VALUES (?, CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))",
                           -1, &st, NULL) != SQLITE_OK) {
        goto rollback;
    }
    sqlite3_bind_int(st, 1, m->version);
    if (sqlite3_step(st) != SQLITE_DONE) {
        goto rollback;
    }
    sqlite3_finalize(st);
    st = NULL;
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        goto rollback;
    }
    return HSB_OK;

rollback:
    sqlite3_finalize(st);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return HSB_EIO;
}

hsb_err store_schema_migrate(sqlite3 *db, int *applied)
{
    int version = 0;
    int n = 0;
    hsb_err err;

    if (applied != NULL) {
        *applied = 0;
    }
    err = store_schema_version(db, &version);
    if (err != HSB_OK) {
        return err;
    }
    if (version > STORE_SCHEMA_VERSION) {
        return HSB_EINVAL;
    }
    for (size_t i = 0; i < STORE_SCHEMA_N; i++) {
        if (store_schema_migrations[i].version <= version) {
            continue;
        }
        err = store_schema_apply(db, &store_schema_migrations[i]);
        if (err != HSB_OK) {
            return err;
        }
        n++;
    }
    if (applied != NULL) {
        *applied = n;
    }
    return HSB_OK;
}
