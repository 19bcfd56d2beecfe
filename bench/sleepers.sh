#!/usr/bin/env bash
# 10,000 sleeping tasks in one runner, end to end: a real server (SQLite), one
# ParallelSleepWorkflow of COUNT SleepTasks of SLEEP seconds each, and ONE `tessera runner` at
# concurrency COUNT under the default vm.max_map_count. Prints the wall time from submit to
# the job completed, and the runner's peak memory per task.
#
#   bench/sleepers.sh                       # COUNT=10000 SLEEP=10 (seconds)
#   COUNT=2000 SLEEP=5 bench/sleepers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-10000}
SECONDS_EACH=${SLEEP:-10}
source bench/lib.sh
bench_setup parallel-sleep parallel_sleep
start_server "sqlite://$dir/s.db" server
export TESSERA_SERVER=$url
echo "vm.max_map_count: $(cat /proc/sys/vm/max_map_count)"
start=$(date +%s.%N)
job=$("$bin" submit ParallelSleepWorkflow --input "{\"count\":$COUNT,\"seconds\":$SECONDS_EACH}" --json \
    | sed -n 's/^  "id": "\(.*\)",$/\1/p' | head -1)
"$bin" runner "$wasm" --concurrency "$COUNT" --quiet >"$dir/runner.out" 2>"$dir/runner.err" &
runner=$!
pids+=($runner)
peak=0
while kill -0 "$runner" 2>/dev/null; do
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$runner/status" 2>/dev/null || echo 0)
    [ "${hwm:-0}" -gt "$peak" ] && peak=$hwm
    sleep 0.5
done
wait "$runner" || { echo "the runner failed:"; tail -20 "$dir/runner.err"; exit 1; }
end=$(date +%s.%N)
state=$("$bin" jobs show "$job" --json | sed -n 's/^  "state": "\(.*\)",$/\1/p')
computed=$("$bin" jobs show "$job" --json | tr -d ' \n' | sed -n 's/.*"computed":\([0-9]*\).*/\1/p')
awk -v s="$start" -v e="$end" -v c="$COUNT" -v secs="$SECONDS_EACH" -v p="$peak" -v st="$state" -v n="$computed" 'BEGIN {
    printf "job %s: %s tasks computed; %d sleeps of %s s in one runner took %.1f s (ideal %s s)\n", st, n, c, secs, e - s, secs
    printf "runner peak RSS: %.0f MiB = %.1f KiB per sleeping task\n", p / 1024, p / c
}'
