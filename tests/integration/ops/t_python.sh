#!/bin/bash
# The Python binding against a real daemon: requests, a Python handler agent, fetch/ack/nack and
# error codes (t_python.py). HSBUS_LIB points ctypes at the libhsbus.so of this build.
. "$(dirname "$0")/lib.sh"
: "${HSBUS_LIB:?}"

start_daemon
PYTHONPATH="$HSB_SRCDIR/agents/client/python" python3 "$(dirname "$0")/t_python.py" \
    "$AGENTS_URL" || fail "t_python.py failed"
stop_daemon
