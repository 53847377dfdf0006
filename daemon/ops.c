/*
 * daemon/ops.c - operator surfaces: control socket, metrics HTTP server, alerts.
 * Placeholder until the operations module lands: nothing to start.
 */
#include "daemon/server.h"

hsb_err srv_ops_start(srv *s)
{
    (void)s;
    return HSB_OK;
}

void srv_ops_stop(srv *s)
{
    (void)s;
}

void srv_ops_free(srv *s)
{
    (void)s;
}
