#!/usr/bin/env bash
# W2: a root task fans out 10,000 no-op subtasks; two runners (concurrency 64 each) run them.
# Prints end-to-end tasks/s: tasks computed / (last stop − first start) of the job.
#
#   bench/w2.sh            # 10,000 subtasks, 2 runners
#   COUNT=20000 RUNNERS=4 CONCURRENCY=32 bench/w2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10000}
RUNNERS=${RUNNERS:-2}
CONCURRENCY=${CONCURRENCY:-64}
cargo build --release -p tessera --quiet
cargo build --release -p fan-out --target wasm32-wasip2 --quiet
bin=$PWD/target/release/tessera
wasm=$PWD/target/wasm32-wasip2/release/fan_out.wasm
dir=$(mktemp -d)
"$bin" server --listen 127.0.0.1:0 --db "sqlite://$dir/w2.db" >"$dir/server.out" 2>"$dir/server.err" &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    url=$(sed -n 's/^Tessera server listening on //p' "$dir/server.out")
    [ -n "$url" ] && break
    sleep 0.1
done
export TESSERA_SERVER=$url
job=$("$bin" submit FanOut --name w2 --input "{\"count\": $COUNT}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
start=$(date +%s.%N)
"$bin" parallel -n "$RUNNERS" -- "$bin" runner "$wasm" --concurrency "$CONCURRENCY" --quiet
end=$(date +%s.%N)
"$bin" jobs show "$job" --json | python3 -c '
import json, sys
job = json.load(sys.stdin)
n = job["task_counts"]["computed"]
secs = (job["finished_at"] - job["started_at"]) / 1e9
state = job["state"]
print(f"W2: job {state}, {n} tasks computed in {secs:.2f} s (first start to last stop) = {n / secs:,.0f} tasks/s")
'
echo "runners' wall time, start to exit: $(python3 -c "print(f'{$end - $start:.2f}')") s"
