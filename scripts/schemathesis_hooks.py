"""Schemathesis hooks for Tessera's API run (scripts/schemathesis.sh).

A claim may long-poll for up to 60 s when no work is queued; generated claims would each
wait that long. The fuzzer asks without waiting: the long poll itself is tested by the Rust
tests (cli/tests/api.rs), the shape of every request by this run.
"""

import schemathesis

# A component upload is raw bytes, like application/octet-stream.
schemathesis.serializer.alias("application/wasm", "application/octet-stream")


def _no_wait(claim):
    # Only a valid wait is shortened: a wrong type or a negative number must stay as it is, so
    # that the server's refusal of it is what is tested (turning it into 0 would make the
    # request valid behind the fuzzer's back).
    if isinstance(claim, dict):
        wait = claim.get("wait_ms")
        whole = isinstance(wait, int) or (isinstance(wait, float) and wait.is_integer())
        if whole and not isinstance(wait, bool) and 0 < wait <= 60000:
            claim["wait_ms"] = 0


@schemathesis.hook
def map_body(ctx, body):
    if isinstance(body, dict):
        _no_wait(body)
        _no_wait(body.get("claim"))
    return body
