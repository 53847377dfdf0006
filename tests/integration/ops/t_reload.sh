#!/bin/bash
# Reload: `hsbusctl reload` and SIGHUP re-read the file, apply the live keys (a breaker threshold
# shows in `hsbusctl breakers`), name the keys that need a restart, and refuse a bad file
# without changing anything.
. "$(dirname "$0")/lib.sh"

CONF=$T/hsbusd.conf
write_conf() { # write_conf THRESHOLD [extra lines...]
    local th=$1
    shift
    {
        echo "[agent.echo]"
        echo "builtin = echo"
        echo "breaker_failure_threshold = $th"
        for l in "$@"; do echo "$l"; done
    } >"$CONF"
}
threshold() {
    ctl --json breakers | jget '[a["threshold"] for a in d if a["agent"]=="echo"][0]'
}

write_conf 5
start_daemon -c "$CONF"
[ "$(threshold)" = 5 ] || fail "initial threshold $(threshold)"

write_conf 7
expect_rc 0 ctl --json reload
printf '%s' "$OUT" | jget '"agent.echo.breaker_failure_threshold" in d["applied"] or any("breaker_failure_threshold" in k for k in d["applied"])' | grep -qx True ||
    fail "reload report does not list the threshold as applied: $OUT"
[ "$(printf '%s' "$OUT" | jget 'd["restart_needed"]')" = "[]" ] || fail "restart_needed: $OUT"
[ "$(threshold)" = 7 ] || fail "threshold after hsbusctl reload: $(threshold)"
expect_rc 0 ctl reload
expect_out '^applied'
ok "hsbusctl reload applies breaker_failure_threshold live"

write_conf 9
kill -HUP "$DPID"
th9() { [ "$(threshold)" = 9 ]; }
poll 10 th9 || fail "threshold after SIGHUP: $(threshold)"
poll 5 grep -q 'event=reloaded' "$LOG" || fail "no reloaded event in the log"
ok "SIGHUP applies it too"

# A key that needs a restart is reported, not applied.
{
    cat "$CONF"
    printf '[gateway]\ncontexts = 32\n'
} >"$CONF.new"
mv "$CONF.new" "$CONF"
expect_rc 0 ctl --json reload
printf '%s' "$OUT" | jget 'any("contexts" in k for k in d["restart_needed"])' | grep -qx True ||
    fail "gateway.contexts not reported as restart_needed: $OUT"
ok "restart-only keys are listed as restart_needed"

# A bad file is refused with file and line; nothing changes.
write_conf 11 "[bus]" "no_such_key = 1"
expect_rc 1 ctl reload
expect_out "$CONF:5"
expect_out 'no_such_key'
[ "$(threshold)" = 9 ] || fail "a refused reload changed the threshold: $(threshold)"
ok "a bad file is refused with FILE:LINE and changes nothing"

# The [bus] default applies to agents without their own value.
cat >"$CONF" <<CONF
[bus]
breaker_failure_threshold = 13

[agent.echo]
builtin = echo
CONF
expect_rc 0 ctl --json reload
printf '%s' "$OUT" | jget 'any("breaker_failure_threshold" in k for k in d["applied"])' | grep -qx True ||
    fail "bus.breaker_failure_threshold not listed as applied: $OUT"
[ "$(threshold)" = 13 ] || fail "threshold after a [bus] change: $(threshold)"
ok "bus.breaker_failure_threshold applies live to agents without their own"

# log_level is live too.
write_conf 9 "" "[daemon]" "log_level = debug"
expect_rc 0 ctl reload
ctl agents >/dev/null
poll 5 grep -q 'level=debug event=control_command cmd=agents' "$LOG" || fail "log_level=debug not applied"
ok "daemon.log_level is applied by a reload"
stop_daemon
