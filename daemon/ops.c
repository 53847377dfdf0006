/*
 * daemon/ops.c - operator surfaces: the control socket (control.c, commands in cmdtab.c), the
 * metrics HTTP server (metrics.c), the operator tick and alert rules (alerts.c), and systemd
 * readiness notification.
 *
 * Start order: alerts (the tick every other surface reads), control, metrics; then READY=1 to
 * systemd. Stop order is the reverse of what could still call into the others: control first (its
 * worker may be running a command), then the store's pending completions (deferred control calls
 * finish), metrics, and the timer last. Everything here runs on the loop thread.
 *
 * sd_notify: with Type=notify, systemd passes NOTIFY_SOCKET; the protocol is one datagram of
 * "KEY=VALUE\n" lines on that AF_UNIX socket, so it is implemented here in a few lines rather
 * than by linking libsystemd. Without NOTIFY_SOCKET nothing is sent.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon/alerts.h"
#include "daemon/cmdtab.h"
#include "daemon/control.h"
#include "daemon/log.h"
#include "daemon/metrics.h"
#include "daemon/server.h"

#include "daemon/store/store.h"

#define OPS_CONTROL_CONTEXTS 4

typedef struct ops_state {
    alerts *al;
    control *ctl;
    metrics *m;
    bool stopped;
} ops_state;

/* ops_sd_notify sends state ("READY=1", "STOPPING=1") to systemd when it asked for it. */
static void ops_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    struct sockaddr_un sa;
    size_t len;
    int fd;

    if (path == NULL || path[0] == '\0') {
        return;
    }
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sa.sun_path)) {
        log_warn("sd_notify_failed", "reason=bad_notify_socket");
        return;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@') {
        sa.sun_path[0] = '\0'; /* abstract namespace */
    }
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        log_warn("sd_notify_failed", "err=\"%s\"", strerror(errno));
        return;
    }
    /* A datagram to a local socket: never blocks for long (MSG_DONTWAIT to be sure). */
    if (sendto(fd, state, strlen(state), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa,
               (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0) {
        log_warn("sd_notify_failed", "err=\"%s\"", strerror(errno));
    }
    close(fd);
}

static void ops_ext_handler(void *arg, inbox_item *item)
{
    ops_state *o = arg;

    if (item->kind == CONTROL_ITEM_CALL && o->ctl != NULL) {
        control_handle(o->ctl, item);
        return;
    }
    log_error("ops_unknown_item", "kind=%d", item->kind);
}

hsb_err srv_ops_start(srv *s)
{
    ops_state *o = calloc(1, sizeof(*o));
    hsb_err err;

    if (o == NULL) {
        return HSB_ENOMEM;
    }
    s->ops = o;
    err = alerts_start(s, &o->al);
    if (err != HSB_OK) {
        return err;
    }
    srv_set_ext_handler(s, ops_ext_handler, o);
    if (s->cfg.control_enabled) {
        err = control_start(s, o->al, s->cfg.control_listen, OPS_CONTROL_CONTEXTS, &o->ctl);
        if (err != HSB_OK) {
            return err;
        }
    }
    if (s->cfg.metrics_enabled) {
        err = metrics_start(s, o->al, o->ctl, s->cfg.metrics_bind, s->cfg.metrics_port, &o->m);
        if (err != HSB_OK) {
            return err;
        }
        alerts_set_tick_hook(o->al, metrics_refresh, o->m);
    }
    return HSB_OK;
}

void srv_ops_ready(srv *s)
{
    (void)s;
    ops_sd_notify("READY=1\nSTATUS=running\n");
}

void srv_ops_stop(srv *s)
{
    ops_state *o = s->ops;

    if (o == NULL || o->stopped) {
        return;
    }
    o->stopped = true;
    ops_sd_notify("STOPPING=1\n");
    control_stop(o->ctl);
    if (s->store != NULL) {
        store_sync(s->store); /* deferred control calls (dlq purge) complete before we free */
    }
    metrics_stop(o->m);
    alerts_stop(o->al);
}

void srv_ops_free(srv *s)
{
    ops_state *o = s->ops;

    if (o == NULL) {
        return;
    }
    control_free(o->ctl);
    metrics_free(o->m);
    alerts_free(o->al);
    free(o);
    s->ops = NULL;
}
