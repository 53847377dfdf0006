#!/bin/bash
# Alert rules: a rule whose condition holds for alerts.for_ms fires; firing and resolving are
# logged and published on topic sys.alerts, and `hsbusctl status` lists what is firing.
# Thresholds are made tiny by a live reload, so the test waits for conditions, never for time.
. "$(dirname "$0")/lib.sh"

CONF=$T/hsbusd.conf
write_conf() { # write_conf RSS_BYTES QUEUE_DEPTH
    cat >"$CONF" <<CONF
[agent.echo]
builtin = echo

[alerts]
interval_ms = 100
for_ms = 0
rss_bytes = $1
queue_depth = $2
CONF
}
firing() { # firing RULE: is RULE listed by hsbusctl status?
    ctl --json status | jget "any(a['rule'] == '$1' for a in d['alerts_firing'])" | grep -qx True
}

write_conf 0 0
start_daemon -c "$CONF"
[ "$(ctl --json status | jget 'len(d["alerts_firing"])')" = 0 ] || fail "alerts firing at start"

# A subscriber to sys.alerts, connected before anything fires.
"$OPS_CLIENT" listen "$AGENTS_URL" sys.alerts 30 >"$T/listen.out" 2>&1 &
LISTEN=$!
BGPIDS="$BGPIDS $LISTEN"
poll 10 grep -q connected "$T/listen.out" || fail "listener did not connect"

# Memory: any RSS is over 1 byte.
write_conf 1 0
ctl reload >/dev/null || fail "reload"
poll 10 firing memory_rss_bytes || fail "memory rule did not fire: $(ctl status)"
wait $LISTEN || fail "nothing published on sys.alerts: $(cat "$T/listen.out")"
grep -q 'topic=sys.alerts from=sys body=.*rule.memory_rss_bytes.*state.firing' "$T/listen.out" ||
    fail "sys.alerts message: $(cat "$T/listen.out")"
grep -q 'level=warn event=alert_firing rule=memory_rss_bytes agent=- value=[0-9.]* threshold=1.000' "$LOG" ||
    fail "alert_firing not logged"
expect_rc 0 ctl status
expect_out 'memory_rss_bytes'
http_get /healthz
[ "$HTTP_CODE" = 503 ] || fail "/healthz $HTTP_CODE with the memory check failing"
printf '%s\n' "$HTTP_BODY" | grep -q '^memory: rss [0-9]* > 1 bytes$' || fail "/healthz body: $HTTP_BODY"
ok "memory rule fires: logged, published on sys.alerts, in status, /healthz 503"

# Queue depth, per agent: an agent that connects and never fetches.
"$OPS_CLIENT" idle "$AGENTS_URL" slow 30 >"$T/idle.out" 2>&1 &
BGPIDS="$BGPIDS $!"
poll 10 grep -q connected "$T/idle.out" || fail "idle agent did not connect"
for i in 1 2 3; do
    "$OPS_CLIENT" send "$AGENTS_URL" slow "m$i" >/dev/null || fail "send to slow"
done
write_conf 0 2
ctl reload >/dev/null || fail "reload"
poll 10 firing queue_depth || fail "queue_depth rule did not fire: $(ctl status)"
[ "$(ctl --json status | jget '[a["agent"] for a in d["alerts_firing"] if a["rule"]=="queue_depth"][0]')" = slow ] ||
    fail "queue_depth alert names the wrong agent"
resolved() { grep -q 'event=alert_resolved rule=memory_rss_bytes' "$LOG"; }
poll 10 resolved || fail "memory rule did not resolve after rss_bytes=0"
ok "queue_depth fires per agent; the memory rule resolves (logged)"

write_conf 0 0
ctl reload >/dev/null || fail "reload"
none() { [ "$(ctl --json status | jget 'len(d["alerts_firing"])')" = 0 ]; }
poll 10 none || fail "alerts still firing: $(ctl status)"
grep -q 'event=alert_resolved rule=queue_depth agent=slow' "$LOG" || fail "queue_depth resolve not logged"
ok "turning a rule off resolves it"
stop_daemon
