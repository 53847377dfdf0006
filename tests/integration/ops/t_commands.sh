#!/bin/bash
# Every hsbusctl command against a real daemon, human and --json, with the exit codes:
# 0 ok, 1 the daemon said no, 2 usage error, 3 daemon not reachable.
. "$(dirname "$0")/lib.sh"

CONF=$T/hsbusd.conf
cat >"$CONF" <<CONF
[agent.echo]
builtin = echo

[agent.dlqsink]
max_deliveries = 1
CONF
start_daemon -c "$CONF"

# --- views, human and JSON
for cmd in status agents queues breakers stats; do
    expect_rc 0 ctl $cmd
    [ -n "$OUT" ] || fail "$cmd printed nothing"
    expect_rc 0 ctl --json $cmd
    printf '%s' "$OUT" | python3 -c 'import json,sys; json.load(sys.stdin)' ||
        fail "$cmd --json is not JSON: $OUT"
done
ok "views print tables and valid JSON"

expect_rc 0 ctl status
expect_out '^version +[0-9]'
expect_out 'agents +[0-9]+'
expect_out 'alerts_firing'
expect_out 'breakers_not_closed'
[ "$(ctl --json status | jget 'd["pid"]')" = "$DPID" ] || fail "status pid is not the daemon's"
[ "$(ctl --json status | jget 'd["state"]')" = "running" ] || fail "status state"
expect_rc 0 ctl agents
expect_out '^AGENT +INSTANCES'
expect_out '^echo +1 '
expect_rc 0 ctl queues
expect_out '^AGENT +CRITICAL +HIGH +NORMAL +LOW'
[ "$(ctl --json queues | jget '[a["max_msgs"] for a in d if a["agent"]=="echo"][0]')" = 10000 ] ||
    fail "queues max_msgs"
expect_rc 0 ctl stats
expect_out '^totals:'
expect_out '^gateway:'
ok "status, agents, queues, stats show the daemon"

# --- traffic shows up in the counters
"$OPS_CLIENT" request "$AGENTS_URL" echo "hello" >/dev/null || fail "request to echo failed"
[ "$(ctl --json agents | jget '[a["acked"] for a in d if a["agent"]=="echo"][0]')" -ge 1 ] ||
    fail "echo's acked counter did not move"
ok "a request to echo is counted"

# --- breakers
expect_rc 0 ctl breaker open echo
expect_out 'state +open'
[ "$(ctl --json breakers | jget '[a["state"] for a in d if a["agent"]=="echo"][0]')" = open ] ||
    fail "breaker not open"
expect_rc 0 ctl status
expect_out 'echo +open'
expect_rc 0 ctl --json breaker close echo
[ "$(printf '%s' "$OUT" | jget 'd["state"]')" = closed ] || fail "breaker close: $OUT"
expect_rc 0 ctl breaker reset echo
[ "$(ctl --json breakers | jget '[(a["state"], a["forced"]) for a in d if a["agent"]=="echo"][0]')" = "('closed', False)" ] ||
    fail "breaker not reset"
ok "breaker open, close, reset"

expect_rc 1 ctl breaker open no-such-agent
expect_out 'unknown agent "no-such-agent"'
expect_rc 1 ctl --json breaker reset no-such-agent
printf '%s' "$OUT" | grep -q '"ok": false' || fail "--json error reply: $OUT"
ok "an unknown agent is a clear error, exit 1"

# --- log level
expect_rc 0 ctl log-level debug
expect_out 'level +debug'
ctl status >/dev/null
poll 5 grep -q 'level=debug event=control_command cmd=status' "$LOG" || fail "no debug line after log-level debug"
expect_rc 0 ctl --json log-level info
[ "$(printf '%s' "$OUT" | jget 'd["previous"]')" = debug ] || fail "log-level previous: $OUT"
expect_rc 1 ctl log-level loud
expect_out 'unknown level "loud"'
ok "log-level"

# --- usage errors (exit 2) are caught before connecting
expect_rc 2 ctl frobnicate
expect_out 'unknown command "frobnicate"'
expect_rc 2 ctl breaker
expect_out 'sub-command'
expect_rc 2 ctl breaker open
expect_out 'usage: hsbusctl breaker open NAME'
expect_rc 2 ctl --watch 1 drain
expect_out 'live views only'
expect_rc 2 ctl --watch zero status
expect_rc 0 ctl help
expect_out 'breaker open NAME'
expect_rc 0 ctl help dlq
expect_out 'dlq replay ID'
ok "usage errors exit 2; help lists the command table"

# --- reload with no config file: nothing to apply, still a success
expect_rc 0 ctl --json reload
ok "reload answers"

# --- --watch repeats a live view until interrupted
timeout -s INT --preserve-status 3 "$HSBUSCTL" --run-dir "$RUN" --watch 1 agents >"$T/watch.out" 2>&1
rc=$?
[ $rc -eq 0 ] || fail "--watch exited $rc: $(cat "$T/watch.out")"
grep -q 'Every 1s: hsbusctl agents' "$T/watch.out" || fail "--watch header missing"
grep -q '^echo ' "$T/watch.out" || fail "--watch shows no table"
ok "--watch"

# --- store commands: dead letters, cache, audit (or a clear error without a store)
STORE=$(ctl --json status | jget 'd["store"]')
if [ "$STORE" = absent ]; then
    for c in "dlq list" "dlq show 1" "dlq replay 1" "dlq purge" "cache stats" "cache flush" "audit verify"; do
        expect_rc 1 ctl $c
        expect_out 'store not available'
    done
    ok "store commands say the store is not available"
else
    "$OPS_CLIENT" sink "$AGENTS_URL" dlqsink 1 20 >"$T/sink.out" 2>&1 &
    SINK=$!
    BGPIDS="$BGPIDS $SINK"
    poll 10 grep -q connected "$T/sink.out" || fail "sink did not connect"
    "$OPS_CLIENT" send "$AGENTS_URL" dlqsink "to be dead-lettered" >/dev/null || fail "send to dlqsink"
    wait $SINK || fail "the sink did not nack: $(cat "$T/sink.out")"
    dl_count() { [ "$(ctl --json dlq list | jget 'len(d)')" -ge "$1" ]; }
    poll 10 dl_count 1 || fail "no dead letter listed: $(ctl dlq list 2>&1)"
    expect_rc 0 ctl dlq list
    expect_out '^ID +MSG_ID +AGENT +REASON'
    expect_out 'dlqsink'
    ID=$(ctl --json dlq list | jget 'd[0]["id"]')
    expect_rc 0 ctl dlq show "$ID"
    expect_out 'agent +dlqsink'
    expect_rc 0 ctl --json dlq show "$ID"
    [ "$(printf '%s' "$OUT" | jget 'd["envelope"]["to"]')" = dlqsink ] || fail "dlq show: $OUT"
    expect_rc 1 ctl dlq show 999999999
    expect_out 'no dead letter with id 999999999'
    expect_rc 1 ctl dlq show abc
    expect_out 'usage'

    # Replay: the sink takes it again (and dead-letters it again).
    "$OPS_CLIENT" sink "$AGENTS_URL" dlqsink 1 20 >"$T/sink2.out" 2>&1 &
    SINK=$!
    BGPIDS="$BGPIDS $SINK"
    poll 10 grep -q connected "$T/sink2.out" || fail "sink did not connect again"
    expect_rc 0 ctl --json dlq replay "$ID"
    [ "$(printf '%s' "$OUT" | jget 'd["replayed"]')" = "$ID" ] || fail "dlq replay: $OUT"
    wait $SINK || fail "the replayed message did not reach the sink"
    poll 10 dl_count 1 || fail "the replayed message was not dead-lettered again"
    expect_rc 1 ctl dlq replay "$ID"
    expect_out "no dead letter with id $ID"

    ID2=$(ctl --json dlq list | jget 'd[-1]["id"]')
    expect_rc 0 ctl --json dlq purge "$ID2"
    [ "$(printf '%s' "$OUT" | jget 'd["purged"]')" = 1 ] || fail "dlq purge ID: $OUT"
    expect_rc 0 ctl dlq purge
    expect_out 'purged'
    [ "$(ctl --json dlq list | jget 'len(d)')" = 0 ] || fail "dlq not empty after purge"
    expect_rc 1 ctl dlq purge 999999999
    expect_out 'no dead letter'
    ok "dlq list, show, replay, purge"

    expect_rc 0 ctl cache stats
    expect_out 'hit_rate'
    expect_rc 0 ctl --json cache stats
    printf '%s' "$OUT" | jget 'd["cache"]["hits"] >= 0' >/dev/null || fail "cache stats JSON: $OUT"
    expect_rc 0 ctl cache flush
    expect_out 'flushed_entries'
    [ "$(ctl --json cache stats | jget 'd["cache"]["flushes"]')" -ge 1 ] || fail "flush not counted"
    ok "cache stats, cache flush"

    expect_rc 0 ctl audit verify
    expect_out 'ok +yes'
    expect_rc 0 ctl --json audit verify
    [ "$(printf '%s' "$OUT" | jget 'd["ok"]')" = True ] || fail "audit verify: $OUT"
    ok "audit verify"
fi

# --- drain: the daemon exits 0, and then hsbusctl says it is not reachable (exit 3)
expect_rc 0 ctl drain
expect_out 'draining +yes'
wait "$DPID"
rc=$?
DPID=
[ $rc -eq 0 ] || fail "hsbusd exited $rc after drain"
expect_rc 3 ctl status
expect_out "cannot connect to ipc://$RUN/control.sock: .*is hsbusd running\\?"
expect_rc 3 "$HSBUSCTL" -s "ipc://$T/nowhere.sock" agents
ok "drain exits 0; a daemon that is down is exit 3 with a clear message"

# --- without a store ([store] enabled = false) the store commands say so (exit 1)
: >"$LOG"
start_daemon --set store.enabled=false
[ "$(ctl --json status | jget 'd["store"]')" = absent ] || fail "store not reported absent"
for c in "dlq list" "dlq show 1" "dlq replay 1" "dlq purge" "cache stats" "cache flush" "audit verify"; do
    expect_rc 1 ctl $c
    expect_out 'store not available'
done
stop_daemon
ok "without a store, dlq/cache/audit answer 'store not available'"
