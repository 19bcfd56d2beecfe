#!/usr/bin/env bash
# Fleet runners: time from submit to the first task's start (its first log line, minus the
# job's submitted_at) on a fleet runner (`tessera runner --deployed`, waiting for work) that
#   cold:   has never seen the component: it fetches it from the server, checks its digest and
#           compiles it (an empty compiled-code cache);
#   disk:   is new, but its disk cache holds the compiled code (a fleet started a second time);
#   memory: has the component loaded already (its next job).
# Prints the median and the range over ROUNDS rounds (default 5).
#
#   bench/fleet.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
source bench/lib.sh
bench_setup parallel-sleep parallel_sleep
start_servers 1 "sqlite://$dir/fleet.db"
"$bin" deploy "$wasm" --name parallel_sleep >/dev/null

# Starts a fleet runner with the disk cache $1, and waits until it waits for work.
start_fleet() {
    local id=fleet-$RANDOM$RANDOM
    TESSERA_CACHE_DIR=$1 "$bin" runner --deployed --forever --quiet --runner-id "$id" &
    fleet_pid=$!
    pids+=("$fleet_pid")
    until "$bin" runners list --json | grep -q "\"$id\""; do sleep 0.05; done
    sleep 0.2
}

# Submits a one-task job and prints ms from its submit to its first log line (the root task
# logs as its execute begins): claim, fetch, digest check, compile or cache, instantiate.
first_start_ms() {
    local job
    job=$("$bin" submit ParallelSleepWorkflow --input '{"count":0,"seconds":0}' --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
    until "$bin" logs "$job" --json | grep -q time_unix_nano; do sleep 0.05; done
    submitted=$("$bin" jobs show "$job" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["submitted_at"])')
    "$bin" logs "$job" --json | python3 -c '
import json, sys
first = min(l["time_unix_nano"] for l in json.load(sys.stdin))
print("%.1f" % ((first - int(sys.argv[1])) / 1e6))' "$submitted"
}

cold=() disk=() memory=()
for round in $(seq "$ROUNDS"); do
    cache=$dir/cache-$round
    start_fleet "$cache"
    cold+=("$(first_start_ms)")
    memory+=("$(first_start_ms)")
    kill "$fleet_pid"; wait "$fleet_pid" 2>/dev/null || true
    start_fleet "$cache"
    disk+=("$(first_start_ms)")
    kill "$fleet_pid"; wait "$fleet_pid" 2>/dev/null || true
done
summary() {
    python3 -c '
import statistics, sys
name, xs = sys.argv[1], [float(x) for x in sys.argv[2:]]
print(f"{name:7} median {statistics.median(xs):7.1f} ms   (min {min(xs):.1f}, max {max(xs):.1f}, {len(xs)} rounds)")' "$@"
}
size=$(stat -c %s "$wasm")
echo "submit -> first task start on a fleet runner, component $(basename "$wasm") ($size bytes):"
summary cold "${cold[@]}"
summary disk "${disk[@]}"
summary memory "${memory[@]}"
