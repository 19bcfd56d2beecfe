# Shared by the benchmark scripts: `source bench/lib.sh` from the repository root.

# Builds the release CLI and the guest package $1 (component $2.wasm); sets $bin and $wasm,
# and a scratch directory $dir whose servers and runners ($pids) end with the script.
bench_setup() {
    cargo build --release -p tessera --quiet
    cargo build --release -p "$1" --target wasm32-wasip2 --quiet
    bin=$PWD/target/release/tessera
    wasm=$PWD/target/wasm32-wasip2/release/$2.wasm
    dir=$(mktemp -d)
    pids=()
    # KEEP_DIR=/some/dir keeps a copy of the SQLite database (to look inside: `dbstat`).
    trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null
          [ -n "${KEEP_DIR:-}" ] && cp "$dir"/*.db* "$KEEP_DIR"/ 2>/dev/null; rm -rf "$dir"' EXIT
}

# Starts a server on database $1, its output in $dir/$2.out and .err; sets $url and
# $server_pid.
start_server() {
    # shellcheck disable=SC2086 # SERVER_ARGS is a list of flags
    "$bin" server --listen 127.0.0.1:0 --db "$1" ${SERVER_ARGS:-} >"$dir/$2.out" 2>"$dir/$2.err" &
    server_pid=$!
    pids+=("$server_pid")
    url=$(scripts/server-url.sh "$dir/$2.out" "$dir/$2.err")
}

# Starts $1 servers on database $2; sets $urls and $servers (their pids), and $url and
# TESSERA_SERVER to the first.
start_servers() {
    urls=()
    servers=()
    local s
    for s in $(seq "$1"); do
        start_server "$2" "server$s"
        urls+=("$url")
        servers+=("$server_pid")
    done
    url=${urls[0]}
    export TESSERA_SERVER=$url
}

# Runs $1 runners of $wasm at concurrency $2 (plus RUNNER_ARGS) with `tessera parallel`,
# runner i talking to server i mod the number of servers (start_servers).
run_runners() {
    BENCH_SERVERS="${urls[*]}" BENCH_BIN="$bin" BENCH_WASM="$wasm" BENCH_CONCURRENCY="$2" \
        BENCH_RUNNER_ARGS="${RUNNER_ARGS:-}" "$bin" parallel -n "$1" -- sh -c '
        set -- $BENCH_SERVERS
        shift $(( (TESSERA_PARALLEL_INDEX - 1) % $# ))
        exec "$BENCH_BIN" runner "$BENCH_WASM" --server "$1" \
            --concurrency "$BENCH_CONCURRENCY" --quiet $BENCH_RUNNER_ARGS'
}
