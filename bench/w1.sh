#!/usr/bin/env bash
# W1: 20 sleep tasks of 5 s each — one runner, five runners in parallel, one runner at
# concurrency 20 — on the embedded server (SQLite), with the release build.
#
#   bench/w1.sh            # 20 × 5 s
#   SECONDS_PER_TASK=1 bench/w1.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p tessera --quiet
cargo build --release -p parallel-sleep --target wasm32-wasip2 --quiet
./target/release/tessera demo --count 20 --seconds "${SECONDS_PER_TASK:-5}" \
    --component target/wasm32-wasip2/release/parallel_sleep.wasm --exit
