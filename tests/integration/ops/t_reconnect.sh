#!/bin/bash
# An external agent outlives a daemon restart: the example echo_agent reconnects when its
# connection is lost, and answers requests again once the new daemon is up.
. "$(dirname "$0")/lib.sh"
: "${ECHO_AGENT:?}"

start_daemon
"$ECHO_AGENT" "$AGENTS_URL" ext-echo 2 2>"$T/agent.log" &
AGENT=$!
BGPIDS="$BGPIDS $AGENT"
poll 10 grep -q "serving as ext-echo" "$T/agent.log" || fail "the agent did not connect"
"$OPS_CLIENT" request "$AGENTS_URL" ext-echo hello >/dev/null || fail "no answer before restart"
ok "the external agent answers"

kill -KILL "$DPID"
wait "$DPID" 2>/dev/null
DPID=
poll 10 grep -q "connection lost; reconnecting" "$T/agent.log" || fail "the agent did not notice"
poll 10 grep -q "retrying in" "$T/agent.log" || fail "the agent did not retry"
ok "the agent notices the daemon is gone and retries with back-off"

: >"$LOG"
start_daemon
poll 20 eval '[ "$(grep -c "serving as ext-echo" "$T/agent.log")" -ge 2 ]' ||
    fail "the agent did not reconnect: $(cat "$T/agent.log")"
"$OPS_CLIENT" request "$AGENTS_URL" ext-echo again >/dev/null || fail "no answer after restart"
ok "after the restart it reconnects and answers again"
kill -TERM "$AGENT"
wait "$AGENT" || fail "the agent exited $? on SIGTERM"
BGPIDS=
ok "SIGTERM stops it with exit 0"
stop_daemon
