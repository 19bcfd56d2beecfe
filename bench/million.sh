#!/usr/bin/env bash
# The million: one root task fans out NGROUPS × EACH no-op subtasks (100 × 10,000 by default)
# through a level of groups; RUNNERS runners at CONCURRENCY each run them. Prints the wall time
# (first start to last stop), tasks/s, the server's peak RSS, the database's size per task, and
# the slowest job GET and first tasks page seen while it ran (sampled every second).
#
#   bench/million.sh                                    # SQLite
#   NGROUPS=10 bench/million.sh                         # 100,011 tasks
#   RUNNER_ARGS="--prefetch 256" bench/million.sh
#   SERVER_ARGS="--max-inflight-mib 4" bench/million.sh   # extra server flags (any bench)
#   DB=postgres://postgres@127.0.0.1:PORT/m SERVERS=2 bench/million.sh   # runner i → server i mod 2
set -euo pipefail
cd "$(dirname "$0")/.."
NGROUPS=${NGROUPS:-100}
EACH=${EACH:-10000}
RUNNERS=${RUNNERS:-2}
CONCURRENCY=${CONCURRENCY:-64}
SERVERS=${SERVERS:-1}
source bench/lib.sh
bench_setup fan-out fan_out
DB=${DB:-sqlite://$dir/m.db}
start_servers "$SERVERS" "$DB"
job=$("$bin" submit Groups --name million --input "{\"groups\": $NGROUPS, \"each\": $EACH}" --json \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
run_runners "$RUNNERS" "$CONCURRENCY" &
runners=$!
pids+=($runners)
samples="$dir/samples"
: > "$samples"
peak=0
while kill -0 "$runners" 2>/dev/null; do
    t=$(curl -s -o /dev/null -w '%{time_total}' "$url/v1/jobs/$job")
    p=$(curl -s -o /dev/null -w '%{time_total}' "$url/v1/jobs/$job/tasks?limit=100")
    echo "$t $p" >> "$samples"
    for server in "${servers[@]}"; do
        hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$server/status")
        [ "$hwm" -gt "$peak" ] && peak=$hwm
    done
    sleep 1
done
wait "$runners"
case $DB in
    sqlite://*) bytes=$(du -cb "$dir"/m.db* | tail -1 | cut -f1) ;;
    *) bytes=$(psql "$DB" -tAc 'SELECT pg_database_size(current_database())') ;;
esac
"$bin" jobs show "$job" --json | python3 -c '
import json, sys
job = json.load(sys.stdin)
n = job["task_counts"]["computed"]
secs = (job["finished_at"] - job["started_at"]) / 1e9
state = job["state"]
print(f"million: job {state}, {n:,} tasks computed in {secs:.1f} s = {n / secs:,.0f} tasks/s")
'
awk -v p="$peak" -v b="$bytes" -v n="$(( NGROUPS * EACH + NGROUPS + 1 ))" 'BEGIN {
    printf "server peak RSS (the largest of the servers) %.0f MiB; database %.0f MB = %.0f bytes per task\n", p / 1024, b / 1e6, b / n
}'
# Latency while it ran: median, 95th percentile and slowest of the samples, in ms.
for column in 1 2; do
    what=$([ $column = 1 ] && echo "job GET" || echo "first tasks page")
    cut -d' ' -f$column "$samples" | sort -g | awk -v what="$what" '
        { v[NR] = $1 * 1000 }
        END {
            if (NR == 0) exit
            p95 = int(NR * 0.95 + 0.5); if (p95 < 1) p95 = 1
            printf "%s: median %.1f ms, p95 %.1f ms, slowest %.1f ms (%d samples, one a second)\n",
                what, v[int((NR + 1) / 2)], v[p95], v[NR], NR
        }'
done
echo "database: ${DB%%:*}, servers: $SERVERS, runners: $RUNNERS x concurrency $CONCURRENCY ${RUNNER_ARGS:-}"
