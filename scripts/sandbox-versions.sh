#!/usr/bin/env bash
# Prints the versions Cargo.lock resolves for the sandbox's crates (wasmtime and the
# wasm-tools it parses components with, the guest SDK's wit-bindgen), one per line, so that a
# reviewer sees them in every CI log. SECURITY.md says why they matter and how to update them.
set -euo pipefail
cd "$(dirname "$0")/.."
crates='wasmtime wasmtime-environ wasmtime-wasi wasmtime-wasi-io cranelift-codegen wasmparser wasm-encoder wit-parser wit-component wit-bindgen'
awk -v want=" $crates " '
    /^\[\[package\]\]/ { name = "" }
    /^name = / { gsub(/"/, "", $3); name = $3 }
    /^version = / && name != "" && index(want, " " name " ") {
        gsub(/"/, "", $3); printf "%-18s %s\n", name, $3
    }
' Cargo.lock | sort
