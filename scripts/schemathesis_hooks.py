"""Schemathesis hooks for Tessera's API run (scripts/schemathesis.sh).

A claim may long-poll for up to 60 s when no work is queued; generated claims would each
wait that long. The fuzzer asks without waiting: the long poll itself is tested by the Rust
tests (cli/tests/api.rs), the shape of every request by this run.
"""

import schemathesis


def _no_wait(claim):
    if isinstance(claim, dict) and "wait_ms" in claim:
        claim["wait_ms"] = 0


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict):
        _no_wait(body)
        _no_wait(body.get("claim"))
    return body
