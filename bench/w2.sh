#!/usr/bin/env bash
# W2: a root task fans out 10,000 no-op subtasks; two runners (concurrency 64 each) run them.
# Prints end-to-end tasks/s: tasks computed / (last stop − first start) of the job.
#
#   bench/w2.sh                                   # SQLite, one server
#   DB=postgres://postgres@127.0.0.1:PORT/w2 SERVERS=2 bench/w2.sh
#   COUNT=20000 RUNNERS=4 CONCURRENCY=32 bench/w2.sh
#   CONCURRENCY=1 RUNNER_ARGS="--prefetch 16" bench/w2.sh      # extra runner flags
#   OUTPUT_BYTES=1024 bench/w2.sh                 # each no-op returns a 1 KiB output
#
# With SERVERS > 1 (PostgreSQL only) runner i talks to server i mod SERVERS.
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10000}
RUNNERS=${RUNNERS:-2}
CONCURRENCY=${CONCURRENCY:-64}
SERVERS=${SERVERS:-1}
OUTPUT_BYTES=${OUTPUT_BYTES:-0}
source bench/lib.sh
bench_setup fan-out fan_out
DB=${DB:-sqlite://$dir/w2.db}
start_servers "$SERVERS" "$DB"
job=$("$bin" submit FanOut --name w2 --input "{\"count\": $COUNT, \"output_bytes\": $OUTPUT_BYTES}" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
run_runners "$RUNNERS" "$CONCURRENCY"
"$bin" jobs show "$job" --json | python3 -c '
import json, sys
job = json.load(sys.stdin)
n = job["task_counts"]["computed"]
secs = (job["finished_at"] - job["started_at"]) / 1e9
state = job["state"]
print(f"W2: job {state}, {n} tasks computed in {secs:.2f} s (first start to last stop) = {n / secs:,.0f} tasks/s")
'
echo "database: ${DB%%:*}, servers: $SERVERS, runners: $RUNNERS x concurrency $CONCURRENCY, output: $OUTPUT_BYTES bytes per task"
