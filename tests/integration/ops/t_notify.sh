#!/bin/bash
# systemd readiness (Type=notify): with NOTIFY_SOCKET set, hsbusd sends READY=1 once its sockets
# listen and STOPPING=1 when it shuts down, as datagrams on that AF_UNIX socket.
. "$(dirname "$0")/lib.sh"

NS=$T/notify.sock
python3 - "$NS" >"$T/notify.out" 2>&1 <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(60)
print("bound", flush=True)
seen = []
while "STOPPING=1" not in seen:
    msg = s.recv(4096).decode()
    for line in msg.splitlines():
        print(line, flush=True)
        seen.append(line)
PY
LISTENER=$!
BGPIDS="$BGPIDS $LISTENER"
poll 10 grep -q bound "$T/notify.out" || fail "notify listener did not start"

NOTIFY_SOCKET=$NS start_daemon
poll 10 grep -qx 'READY=1' "$T/notify.out" || fail "no READY=1: $(cat "$T/notify.out")"
ctl status >/dev/null || fail "not answering after READY=1"
ok "READY=1 once the sockets listen"
kill -TERM "$DPID" # not stop_daemon: that would stop the listener first
wait "$DPID" || fail "hsbusd exited $? after SIGTERM"
DPID=
poll 10 grep -qx 'STOPPING=1' "$T/notify.out" || fail "no STOPPING=1: $(cat "$T/notify.out")"
ok "STOPPING=1 on shutdown"
