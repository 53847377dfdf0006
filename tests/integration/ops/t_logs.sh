#!/bin/bash
# Logs: one key=value line per event on stderr, and never a message body: a unique marker sent in
# bodies along every path that logs (delivery, reply, no route, nack and dead-lettering, dlq show)
# must not appear in the daemon's output, even at log level debug.
. "$(dirname "$0")/lib.sh"

MARK="body-marker-$$-$RANDOM-$RANDOM"
CONF=$T/hsbusd.conf
cat >"$CONF" <<CONF
[agent.echo]
builtin = echo

[agent.dlqsink]
max_deliveries = 1
CONF
start_daemon -c "$CONF" -l debug

"$OPS_CLIENT" request "$AGENTS_URL" echo "$MARK request" >/dev/null || fail "request to echo"
"$OPS_CLIENT" send "$AGENTS_URL" nobody-home "$MARK noroute" >/dev/null 2>&1 # E_NOROUTE
"$OPS_CLIENT" sink "$AGENTS_URL" dlqsink 1 20 >"$T/sink.out" 2>&1 &
SINK=$!
BGPIDS="$BGPIDS $SINK"
poll 10 grep -q connected "$T/sink.out" || fail "sink did not connect"
"$OPS_CLIENT" send "$AGENTS_URL" dlqsink "$MARK nacked" >/dev/null || fail "send to dlqsink"
wait $SINK || fail "sink: $(cat "$T/sink.out")"
if [ "$(ctl --json status | jget 'd["store"]')" != absent ]; then
    has_dl() { [ "$(ctl --json dlq list | jget 'len(d)')" -ge 1 ]; }
    poll 10 has_dl || fail "no dead letter"
    ID=$(ctl --json dlq list | jget 'd[0]["id"]')
    ctl dlq show "$ID" | grep -q "$MARK" || fail "dlq show does not show the body (it should, to the operator)"
fi
# An operator's argument cannot forge a log line (newlines and quotes are neutralised).
ctl log-level $'loud\nts=2026-01-01T00:00:00.000Z level=error event=forged' >/dev/null 2>&1
ctl breaker open 'x" event=forged' >/dev/null 2>&1
stop_daemon

grep -q "event=forged" "$LOG" && grep -E '^ts=[^ ]+ level=error event=forged|[^?]" event=forged' "$LOG" &&
    fail "an argument forged a log line"
grep -q "event=" "$LOG" || fail "empty log"
if grep -n -- "$MARK" "$LOG"; then
    fail "a message body reached the log"
fi
ok "no body in $(wc -l <"$LOG") log lines at level debug"

bad=$(grep -Ev '^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z level=(debug|info|warn|error) event=[a-z_]+( |$)' "$LOG" | head -n 3)
[ -z "$bad" ] || fail "log lines not in 'ts= level= event= key=value' form: $bad"
ok "every line is ts=... level=... event=... key=value"
