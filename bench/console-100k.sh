#!/usr/bin/env bash
# Console with a 100,000-task job: JSON bytes loaded and time to first paint of the job page
# in headless Chromium (needs chromium and `npm ci --prefix console-tests`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tessera --quiet
dir=$(mktemp -d)
./target/release/tessera server --listen 127.0.0.1:0 --db "sqlite://$dir/c.db" >"$dir/out" 2>"$dir/err" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
url=$(scripts/server-url.sh "$dir/out" "$dir/err")
(cd console-tests && TESSERA_URL=$url node bench-100k.mjs)
