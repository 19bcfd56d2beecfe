#!/usr/bin/env bash
# Waits (up to 10 s) for a `tessera server` whose stdout goes to OUT to say where it listens,
# and prints its URL; if it does not, prints its stderr (ERR) and fails.
#
#   url=$(scripts/server-url.sh OUT [ERR])
set -uo pipefail
out=$1
err=${2:-}
for _ in $(seq 100); do
    url=$(sed -n 's/^Tessera server listening on //p' "$out" 2>/dev/null)
    if [ -n "$url" ]; then
        echo "$url"
        exit 0
    fi
    sleep 0.1
done
echo "the server did not start within 10 s" >&2
[ -n "$err" ] && cat "$err" >&2
exit 1
