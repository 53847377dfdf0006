/*
 * daemon/metrics.h - the metrics HTTP server: /metrics (Prometheus text format 0.0.4) and
 * /healthz, served by nng's HTTP server on cfg.metrics_bind:cfg.metrics_port.
 *
 * Why a snapshot. nng runs the HTTP handlers on its own threads, and broker state belongs to the
 * loop thread. Rather than posting each scrape to the loop and completing the HTTP aio from there
 * (which would tie the HTTP server's shutdown to the loop draining its inbox, and make /healthz
 * hang exactly when the loop is stuck, the case it must report), the loop publishes a snapshot
 * once per alerts tick (metrics_refresh): plain copies of the bus's per-agent statistics, totals,
 * gateway and store figures, the alert states. Publishing swaps a pointer under a mutex held for
 * that swap only; a scrape takes a reference under the same mutex and formats outside it, so the
 * loop never waits for a slow scraper. The snapshot is at most one interval old; its age is itself
 * a health check (a loop that stopped ticking fails /healthz). Process figures (RSS, CPU, open
 * descriptors) and log line counts are read by the scrape itself, so they are current.
 *
 * /healthz answers 200 "ok\n" or 503 with one failing check per line:
 *   loop: no tick for N ms          the loop has not refreshed the snapshot for 3 intervals
 *   loop_lag: N ms > M ms           the last tick was late by more than alerts.loop_lag_ms
 *   memory: rss N > M bytes         RSS over alerts.rss_bytes (when set)
 *   store: not writable             a commit failed, or a write was refused for a full queue,
 *                                   since the previous tick (store attached)
 *   breaker: AGENT open             an agent's breaker is open
 *   draining                        the daemon is shutting down
 *
 * Port 0 asks the kernel for a free port; the port bound is logged (event=metrics_listening
 * url=...) and returned by metrics_url.
 */
#ifndef HSB_DAEMON_METRICS_H
#define HSB_DAEMON_METRICS_H

#include <stddef.h>

#include "proto/err.h"

struct srv;
struct alerts;
struct control;

typedef struct metrics metrics;

/*
 * metrics_start binds http://bind:port and serves /metrics and /healthz. On HSB_OK *out is owned
 * by the caller until metrics_free. Loop thread; blocks only while nng binds.
 * Errors (logged with the address): HSB_EIO (address in use, bad bind address), HSB_ENOMEM.
 */
hsb_err metrics_start(struct srv *s, struct alerts *al, struct control *ctl, const char *bind,
                      unsigned port, metrics **out);

/* metrics_refresh publishes a new snapshot of the loop's state; m is a metrics * (void * so that
 * it can be the alerts tick hook). The previous snapshot is freed by its last reader. Loop thread;
 * never waits for a scrape. Out of memory keeps the previous snapshot (its age then shows in
 * /healthz). */
void metrics_refresh(void *m);

/* metrics_url returns the URL actually bound ("http://127.0.0.1:9464"), owned by m. Any thread. */
const char *metrics_url(const metrics *m);

/* metrics_stop stops the HTTP server (open scrapes finish first). Loop thread; blocks briefly. */
void metrics_stop(metrics *m);

/* metrics_free frees m after metrics_stop. metrics_free(NULL) does nothing. */
void metrics_free(metrics *m);

#endif /* HSB_DAEMON_METRICS_H */
