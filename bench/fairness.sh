#!/usr/bin/env bash
# Fair share on a shared fleet: 5 fleet runners x concurrency 4 (20 slots) serve two tenants.
# Tenant A submits 10,000 x 0.2 s sleeps; once A holds the whole fleet, tenant B submits the
# seed job (20 x 1 s). Fair share gives B half the slots: ideally 2 s for B's job (FIFO would
# make it wait for A's 100 s). Prints B's job time (submit to last stop), then each tenant's
# share of the fleet's worker-seconds per second, from the spans, in 0.5 s windows from B's
# submit until B's job ends.
#
#   bench/fairness.sh                                         # SQLite, one server
#   DB=postgres://postgres@127.0.0.1:PORT/fair SERVERS=2 bench/fairness.sh
#   WEIGHT_B=3 bench/fairness.sh                              # B weighs 3 (15 slots of 20)
#
# With SERVERS > 1 (PostgreSQL only) runner i talks to server i mod SERVERS.
set -euo pipefail
cd "$(dirname "$0")/.."
SERVERS=${SERVERS:-1}
RUNNERS=${RUNNERS:-5}
CONCURRENCY=${CONCURRENCY:-4}
WEIGHT_B=${WEIGHT_B:-1}
source bench/lib.sh
bench_setup parallel-sleep parallel_sleep
DB=${DB:-sqlite://$dir/fairness.db}
SERVER_ARGS="--token bench-operator"
start_servers "$SERVERS" "$DB"
export TESSERA_TOKEN=bench-operator
"$bin" tenants create a >/dev/null
"$bin" tenants create b --weight "$WEIGHT_B" >/dev/null
key_a=$("$bin" keys create --role admin --tenant a 2>/dev/null)
key_b=$("$bin" keys create --role admin --tenant b 2>/dev/null)
fleet=$("$bin" keys create --role runner --name fleet 2>/dev/null)
TESSERA_TOKEN=$key_a "$bin" deploy "$wasm" >/dev/null
TESSERA_TOKEN=$key_b "$bin" deploy "$wasm" >/dev/null

# The shared fleet: fleet runners (the operator's runner key), runner i on server i mod N.
BENCH_SERVERS="${urls[*]}" BENCH_BIN="$bin" BENCH_CONCURRENCY="$CONCURRENCY" \
    TESSERA_TOKEN=$fleet "$bin" parallel -n "$RUNNERS" -- sh -c '
    set -- $BENCH_SERVERS
    shift $(( (TESSERA_PARALLEL_INDEX - 1) % $# ))
    exec "$BENCH_BIN" runner --deployed --server "$1" --concurrency "$BENCH_CONCURRENCY" \
        --forever --quiet' >"$dir/fleet.out" 2>"$dir/fleet.err" &
pids+=("$!")

job_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; }
job_a=$(TESSERA_TOKEN=$key_a "$bin" submit ParallelSleepWorkflow --name a-bulk \
    --input '{"count": 10000, "seconds": 0.2}' --json | job_of)
slots=$((RUNNERS * CONCURRENCY))
until [ "$(TESSERA_TOKEN=$key_a "$bin" jobs show "$job_a" --json |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["task_counts"]["running"])')" -ge "$slots" ]; do
    sleep 0.1
done
sleep 1 # A has held every slot for a while.
job_b=$(TESSERA_TOKEN=$key_b "$bin" submit ParallelSleepWorkflow --name b-seed \
    --input '{"count": 20, "seconds": 1}' --json | job_of)
until TESSERA_TOKEN=$key_b "$bin" jobs show "$job_b" --json |
    python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["state"] == "completed" else 1)'; do
    sleep 0.05
done
sleep 0.5 # A keeps every slot busy after B is done.
TESSERA_TOKEN=$key_a "$bin" jobs cancel "$job_a" >/dev/null

BENCH_URL=$url BENCH_KEY_A=$key_a BENCH_KEY_B=$key_b BENCH_SLOTS=$slots python3 - "$job_a" "$job_b" <<'EOF'
import json, os, sys, urllib.request

url, slots = os.environ["BENCH_URL"], int(os.environ["BENCH_SLOTS"])
job_a, job_b = sys.argv[1], sys.argv[2]

def get(path, key):
    req = urllib.request.Request(url + path, headers={"Authorization": "Bearer " + key})
    return json.load(urllib.request.urlopen(req))

def spans(job, key):
    out, cursor = [], None
    while True:
        page = get(f"/v1/jobs/{job}/spans?limit=5000" + (f"&cursor={cursor}" if cursor else ""), key)
        out += page["spans"]
        cursor = page.get("next_cursor")
        if not cursor:
            return out

b = get(f"/v1/jobs/{job_b}", os.environ["BENCH_KEY_B"])
start, end = b["submitted_at"], b["finished_at"]
print(f"B's job: {b['state']}, {b['task_counts']['computed']} tasks, "
      f"{(end - start) / 1e9:.2f} s from submit to its last stop (aim <= 2.5 s, ideal 2 s)")
a_spans = spans(job_a, os.environ["BENCH_KEY_A"])
b_spans = spans(job_b, os.environ["BENCH_KEY_B"])
def busy(spans, lo, hi):
    total = 0
    for s in spans:
        s0, s1 = s["start_time_unix_nano"], s.get("end_time_unix_nano") or hi
        total += max(0, min(s1, hi) - max(s0, lo))
    return total / 1e9
window = 500_000_000
print(f"worker-seconds per second of the fleet's {slots} slots, from B's submit:")
print("   window      A      B   idle")
t = start
while t < end:
    hi = min(t + window, end)
    secs = (hi - t) / 1e9
    wa, wb = busy(a_spans, t, hi) / secs, busy(b_spans, t, hi) / secs
    print(f"  +{(t - start) / 1e9:4.1f} s  {wa:5.1f}  {wb:5.1f}  {max(0.0, slots - wa - wb):5.1f}")
    t = hi
wa, wb = busy(a_spans, start, end), busy(b_spans, start, end)
secs = (end - start) / 1e9
print(f"  overall  {wa / secs:5.1f}  {wb / secs:5.1f}  "
      f"(A {100 * wa / (wa + wb):.0f} %, B {100 * wb / (wa + wb):.0f} % of the busy slots)")
EOF
echo "database: ${DB%%:*}, servers: $SERVERS, fleet: $RUNNERS runners x concurrency $CONCURRENCY, B's weight: $WEIGHT_B"
