#!/bin/bash
# The documents cannot drift from the binaries: docs/hsbusd.conf.example is `hsbusd
# --print-config`, hsbusd.conf(5) documents every key, docs/operations.md and hsbusctl(1) list
# exactly the command table's commands. Regenerate with docs_check.py ... --write.
set -u
: "${HSBUSD:?}" "${HSBUSCTL:?}" "${HSB_SRCDIR:?}"
HERE=$(dirname "$0")
python3 "$HERE/docs_check.py" "$HSBUSD" "$HSBUSCTL" "$HSB_SRCDIR" || exit 1
echo "ok - docs match hsbusd --print-config and the command table"

# The man pages render without warnings (when groff is installed).
if command -v groff >/dev/null 2>&1; then
    for page in hsbusd.8 hsbusctl.1 hsbusd.conf.5; do
        out=$(groff -man -ww -z "$HSB_SRCDIR/docs/$page" 2>&1)
        [ -z "$out" ] || { echo "FAIL: groff warns on $page: $out"; exit 1; }
    done
    echo "ok - man pages render cleanly"
fi
# The unit file is well-formed (when systemd-analyze is available and works here).
if command -v systemd-analyze >/dev/null 2>&1; then
    systemd-analyze verify "$HSB_SRCDIR/docs/hsbusd.service" >/dev/null 2>&1 &&
        echo "ok - systemd-analyze verify hsbusd.service"
fi
exit 0
