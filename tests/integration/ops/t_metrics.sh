#!/bin/bash
# /metrics parses with Prometheus' own parser (promtool check metrics) and carries the families
# operators rely on; /healthz answers 200 "ok", and 503 naming the failing check.
. "$(dirname "$0")/lib.sh"

PROMTOOL=$(command -v promtool) || { echo "promtool not installed (Debian: prometheus)"; exit 77; }

start_daemon
[ -n "$METRICS" ] || fail "no metrics_listening line (port 0 should bind a free port)"
"$OPS_CLIENT" request "$AGENTS_URL" echo "scrape me" >/dev/null || fail "request to echo failed"
# The scrape reads the loop's snapshot, refreshed every alerts.interval_ms: wait for the request.
acked() {
    http_get /metrics
    printf '%s\n' "$HTTP_BODY" | grep -Eq '^hsbus_agent_acked_total\{agent="echo"\} [1-9]'
}
poll 10 acked || fail "echo's ack never reached /metrics"

http_get /metrics
[ "$HTTP_CODE" = 200 ] || fail "/metrics answered $HTTP_CODE"
printf '%s\n' "$HTTP_BODY" >"$T/metrics.txt"
"$PROMTOOL" check metrics <"$T/metrics.txt" >"$T/promtool.out" 2>&1 ||
    fail "promtool check metrics: $(cat "$T/promtool.out")"
ok "promtool check metrics accepts /metrics"

for re in \
    '^# TYPE hsbus_agent_latency_seconds histogram$' \
    '^hsbus_agent_latency_seconds_bucket\{agent="echo",le="\+Inf"\} [1-9]' \
    '^hsbus_agent_latency_seconds_bucket\{agent="echo",le="0\.001"\} ' \
    '^hsbus_agent_latency_seconds_sum\{agent="echo"\} ' \
    '^hsbus_agent_latency_seconds_count\{agent="echo"\} [1-9]' \
    '^hsbus_agent_received_total\{agent="echo"\} [1-9]' \
    '^hsbus_agent_delivered_total\{agent="echo"\} ' \
    '^hsbus_agent_nacked_total\{agent="echo"\} 0' \
    '^hsbus_agent_redelivered_total\{agent="echo"\} ' \
    '^hsbus_agent_expired_total\{agent="echo"\} ' \
    '^hsbus_agent_dead_lettered_total\{agent="echo"\} ' \
    '^hsbus_agent_rejected_busy_total\{agent="echo"\} ' \
    '^hsbus_agent_rejected_breaker_total\{agent="echo"\} ' \
    '^hsbus_agent_queue_depth\{agent="echo",lane="critical"\} 0' \
    '^hsbus_agent_queue_depth\{agent="echo",lane="low"\} 0' \
    '^hsbus_agent_breaker_state\{agent="echo"\} 0' \
    '^hsbus_routed_total [1-9]' \
    '^hsbus_gateway_requests_total [1-9]' \
    '^hsbus_store_up ' \
    '^hsbus_log_lines_total\{level="info"\} [1-9]' \
    '^process_resident_memory_bytes [1-9]' \
    '^process_cpu_seconds_total ' \
    '^hsbus_build_info\{version="' ; do
    grep -Eq -- "$re" "$T/metrics.txt" || fail "/metrics lacks /$re/"
done
if [ "$(ctl --json status | jget 'd["store"]')" != absent ]; then
    for re in '^hsbus_cache_hits_total ' '^hsbus_cache_hit_ratio ' '^hsbus_store_commits_total '; do
        grep -Eq -- "$re" "$T/metrics.txt" || fail "/metrics lacks /$re/"
    done
fi
ok "per-agent counters, histogram buckets, queue depth per lane, breaker, store, process"

http_get /healthz
[ "$HTTP_CODE" = 200 ] || fail "/healthz answered $HTTP_CODE: $HTTP_BODY"
[ "$HTTP_BODY" = ok ] || fail "/healthz body: $HTTP_BODY"
ok "/healthz 200 ok"

ctl breaker open echo >/dev/null || fail "breaker open"
unhealthy() {
    http_get /healthz
    [ "$HTTP_CODE" = 503 ]
}
poll 10 unhealthy || fail "/healthz stayed $HTTP_CODE with echo's breaker open"
http_get /healthz
printf '%s\n' "$HTTP_BODY" | grep -qx 'breaker: echo open' || fail "/healthz body: $HTTP_BODY"
http_get /metrics
printf '%s\n' "$HTTP_BODY" | grep -q '^hsbus_agent_breaker_state{agent="echo"} 1' ||
    fail "breaker state gauge not 1"
ctl breaker reset echo >/dev/null || fail "breaker reset"
healthy() {
    http_get /healthz
    [ "$HTTP_CODE" = 200 ]
}
poll 10 healthy || fail "/healthz did not recover: $HTTP_BODY"
ok "/healthz 503 lists 'breaker: echo open', recovers on reset"

http_get /nope
[ "$HTTP_CODE" = 404 ] || fail "/nope answered $HTTP_CODE"

# A second daemon on the same metrics port refuses to start (exit 1), saying why.
PORT=${METRICS##*:}
timeout 30 "$HSBUSD" -r "$T/run2" -d "$T/var2" --set "metrics.port=$PORT" 2>"$T/second.log"
rc=$?
[ $rc -eq 1 ] || fail "a second daemon on port $PORT exited $rc: $(cat "$T/second.log")"
grep -q "event=metrics_failed url=http://127.0.0.1:$PORT err=\"Address in use\"" "$T/second.log" ||
    fail "no metrics_failed line: $(cat "$T/second.log")"
ok "a metrics port in use stops start-up with exit 1 and event=metrics_failed"
# ... before its agent socket ever listened: no client can reach a daemon that is failing to start.
if grep -q "event=listening" "$T/second.log"; then
    fail "the agent socket listened before start-up failed: $(cat "$T/second.log")"
fi
ok "the failed daemon never opened its agent socket"
stop_daemon

# metrics.enabled = false: no HTTP server at all.
: >"$LOG"
start_daemon --set metrics.enabled=false
[ -z "$METRICS" ] || fail "metrics server started although disabled"
grep -q 'event=metrics_listening' "$LOG" && fail "metrics_listening logged although disabled"
ctl status >/dev/null || fail "status without metrics"
ok "metrics.enabled=false serves nothing"
