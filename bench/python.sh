#!/usr/bin/env bash
# Python guests beside Rust ones: builds examples/parallel-sleep-py with `tessera build-python`
# (componentize-py as pinned in guest-sdk-python/pyproject.toml; TESSERA_COMPONENTIZE_PY, else
# a venv under target/) and runs host/benches/python.rs: size, cold compile, cached load, the
# cost of a 0 s SleepTask attempt, memory per sleeping task with each N asleep at once.
#
#   bench/python.sh [N...]          # default: 100 1000
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_setup parallel-sleep parallel_sleep
pin=$(grep -o 'componentize-py==[0-9.]*' guest-sdk-python/pyproject.toml)
tool=${TESSERA_COMPONENTIZE_PY:-}
if [ -z "$tool" ]; then
    venv=target/componentize-py-venv
    "$venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py ${pin#*==}" ||
        { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "$pin"; }
    tool=$PWD/$venv/bin/componentize-py
fi
cp examples/parallel-sleep-py/parallel_workflow.py "$dir/"
"$bin" build-python "$dir/parallel_workflow.py" -o "$dir/parallel_workflow.wasm" --componentize-py "$tool"
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(100 1000)
TESSERA_PY_COMPONENT=$dir/parallel_workflow.wasm cargo bench -p tessera-host --bench python -- "${counts[@]}"
