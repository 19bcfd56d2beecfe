#!/usr/bin/env bash
# Property-based test of the HTTP API, driven by its own OpenAPI document: schemathesis
# (pinned, in a virtual environment) against a real `tessera server` on a real SQLite file,
# with every check and the stateful phase. Fails on any 5xx, any answer that contradicts the
# document, any schema-valid request refused or schema-violating one accepted.
#
#   scripts/schemathesis.sh [PATH/TO/tessera]        # default: target/debug/tessera
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.32.5
bin=${1:-target/debug/tessera}
venv=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$VERSION"; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "schemathesis==$VERSION"
fi
dir=$(mktemp -d)
token=st-$RANDOM$RANDOM
"$bin" server --listen 127.0.0.1:0 --db "sqlite://$dir/st.db" --token "$token" \
    >"$dir/server.out" 2>"$dir/server.err" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
url=$(scripts/server-url.sh "$dir/server.out" "$dir/server.err")
SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH=scripts \
    "$venv/bin/schemathesis" --config-file scripts/schemathesis.toml \
    run "$url/v1/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks all \
    --max-examples "${MAX_EXAMPLES:-50}" \
    --seed "${SEED:-20261128}" \
    --request-timeout 15 \
    --no-color
if grep -q "panicked" "$dir/server.err"; then
    echo "the server panicked:"; cat "$dir/server.err"; exit 1
fi
