/*
 * daemon/store/agentapi.h - queries and writes for the daemon and for agents (the store functions
 * of hsb_agent_env in agents/agent.h).
 *
 * Reads run on the calling thread: they check a reader connection out of the pool (waiting at
 * most checkout_timeout_ms), and go through the query cache unless told not to. Writes are copied
 * into a write job and run on the writer thread; their completion runs there after COMMIT.
 *
 * Agent policy (the store_agent_* functions): an agent may read and write the `kv` table and
 * tables whose names start with `agent_` (which it may create, alter and drop), and may read
 * `audit`. It may not touch durable messages, dead letters, the schema table or SQLite's own
 * tables, run PRAGMA, ATTACH or DETACH, or control transactions (BEGIN, COMMIT, SAVEPOINT...):
 * such statements fail with HSB_EDENIED. A statement that writes is refused on the read path with
 * HSB_EINVAL (sqlite3_stmt_readonly).
 */
#ifndef HSB_STORE_AGENTAPI_H
#define HSB_STORE_AGENTAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agents/agent.h"
#include "proto/err.h"

typedef struct store store;

#define STORE_QUERY_NOCACHE 1u /* read from the database, bypassing the query cache */
#define STORE_QUERY_AGENT   2u /* apply the agent policy (see above) */

/*
 * store_query runs the read-only statement sql with params[0..n) (borrowed; NULL when n is 0) and
 * calls row for each result row until it returns false. With the cache (the default), a fresh
 * cached result is replayed without touching SQLite; otherwise the rows are read on a reader and,
 * when row never stopped early, the result is cached for ttl_ms (0 = the configured default).
 * row is called with no store lock held (a reader connection may be checked out to the caller
 * meanwhile: row must not call store_query again when readers are scarce). Blocks. Any thread but
 * the loop thread and the writer thread. Errors: HSB_EINVAL (the statement writes, a parameter
 * count mismatch, not exactly one statement), HSB_EDENIED (agent policy), HSB_ETIMEDOUT (no free
 * reader), HSB_EIO (SQLite failed), HSB_ENOMEM.
 */
hsb_err store_query(store *st, const char *sql, const hsb_value *params, size_t n, uint32_t ttl_ms,
                    unsigned flags, hsb_row_fn row, void *arg);

/*
 * store_write queues the statements stmts[0..n) (copied with their parameters before the call
 * returns) as one write job: they commit together or not at all. done (may be NULL) runs on the
 * writer thread after COMMIT with HSB_OK, or with the first statement's error (HSB_EIO for a
 * constraint or SQL error, HSB_EINVAL for transaction control or a parameter mismatch,
 * HSB_EDENIED under STORE_QUERY_AGENT). flags: 0 or STORE_QUERY_AGENT. Never blocks.
 * Errors now: HSB_EINVAL (n is 0, a NULL sql), HSB_EBUSY (queue full), HSB_ECLOSED, HSB_ENOMEM.
 */
hsb_err store_write(store *st, const hsb_stmt *stmts, size_t n, unsigned flags, hsb_done_fn done,
                    void *arg);

/* The agent-environment functions: store_query/store_write with STORE_QUERY_AGENT.
 * store_agent_write is one statement; store_agent_txn several; store_agent_audit appends to the
 * audit trail without a completion. Threads, blocking and errors as above. */
hsb_err store_agent_query(store *st, const char *sql, const hsb_value *params, size_t n,
                          uint32_t ttl_ms, hsb_row_fn row, void *arg);
hsb_err store_agent_write(store *st, const hsb_stmt *stmt, hsb_done_fn done, void *arg);
hsb_err store_agent_txn(store *st, const hsb_stmt *stmts, size_t n, hsb_done_fn done, void *arg);
hsb_err store_agent_audit(store *st, const char *event, const char *detail);

/* store_agent_table_allowed applies the agent policy to one table name. Pure. */
bool store_agent_table_allowed(const char *table, bool write);

#endif /* HSB_STORE_AGENTAPI_H */
