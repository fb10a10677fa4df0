"""passgate's hooks for schemathesis (loaded through SCHEMATHESIS_HOOKS by
tests/fuzz/run).

Checks: the built-in ones compare a response with what /openapi.json
documents for it; these hold for every answer, documented or not: a refusal
is problem+json carrying a contract code and its own status, and every
answer carries its request id.

Auth: a fresh admin with a fresh passkey sign-in every few seconds, so that
a generated request that ends the session (DELETE /v1/me/sessions/{id},
a lock, a device reset) costs the rest of the run a few seconds of 401s,
not all of its depth."""

import itertools
import json
import os
import subprocess

import schemathesis

# The API contract's codes plus passkey_required (docs/api-notes.md); the
# same list as src/error.rs CODES, which /openapi.json publishes as the enum
# of Problem.code. Kept here too so that this check does not trust the
# document it is checking.
CODES = {
    "bad_request", "validation_failed", "unauthorized", "forbidden",
    "passkey_required", "not_found", "username_taken", "invalid_credentials",
    "ceremony_not_found", "webauthn_failed", "mfa_required", "invalid_code",
    "account_locked", "rate_limited", "payload_too_large",
    "method_not_allowed", "unavailable", "internal",
    # issue 20: the risk decision, the review queue, Idempotency-Key
    "step_up_required", "held_for_review", "risk_denied", "review_closed",
    "idempotency_key_reused", "idempotency_in_progress",
}


def header(response, name):
    values = response.headers.get(name.lower()) or []
    return values[0] if values else None


@schemathesis.check
def refusals_are_problem_json_with_a_contract_code(ctx, response, case):
    if response.status_code < 400:
        return None
    content_type = header(response, "content-type") or ""
    if not content_type.startswith("application/problem+json"):
        raise AssertionError(f"a {response.status_code} answered as {content_type!r}, not application/problem+json")
    try:
        problem = json.loads(response.text)
    except ValueError as error:
        raise AssertionError(f"a {response.status_code} whose body is not JSON: {error}") from None
    code = problem.get("code")
    if code not in CODES:
        raise AssertionError(f"a {response.status_code} with code {code!r}, which is not a contract code")
    if problem.get("status") != response.status_code:
        raise AssertionError(f"a {response.status_code} whose problem says status {problem.get('status')!r}")
    for member in ("type", "title", "detail"):
        if not isinstance(problem.get(member), str):
            raise AssertionError(f"a {response.status_code} without a string {member!r}")
    return None


@schemathesis.check
def every_answer_has_a_request_id(ctx, response, case):
    if not header(response, "x-request-id"):
        raise AssertionError(f"a {response.status_code} without x-request-id")
    return None


_users = itertools.count(1)


@schemathesis.auth(refresh_interval=5)
class FreshAdminSession:
    def get(self, case, ctx):
        username = f"fuzz-admin-{os.getpid()}-{next(_users)}"
        made = subprocess.run(
            [os.environ["FUZZ_SESSION"], os.environ["FUZZ_BASE"], os.environ["FUZZ_ORIGIN"], username, os.environ["FUZZ_PASSGATE"]],
            capture_output=True, text=True, timeout=60,
        )
        if made.returncode != 0:
            raise RuntimeError(f"fuzz_session failed: {made.stderr}")
        return made.stdout.strip()

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"
