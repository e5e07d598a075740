"""schemathesis against a real server's OpenAPI schema (``/openapi.json``): every REST operation,
with cases that fit the schema (positive) and cases that do not (negative). The properties: no
5xx, every answer's status, content type and body as the schema declares them, and a request
that breaks the schema refused with a 4xx. ``tests/integration/test_fuzz_rest.py`` and
``assistant bench --fuzz`` run it.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import Verbosity, given
from hypothesis.errors import Unsatisfiable

from bench.fuzz import FuzzServer, FuzzSocket, fuzz_settings
from bench.fuzz_media import b64, encoded_image

#: Routes whose schema does not declare every status they answer yet: their answers are checked
#: for 5xx and against the bodies they declare, not for undocumented statuses. The auth routes
#: (``assistant/server/auth_routes.py``) answer 400 (a body FastAPI's 422 would describe: the app
#: maps validation errors to 400) and 404 without declaring them; reported to their owners.
LENIENT_PREFIXES = ("/v1/admin/", "/v1/realtime/client_secrets")
#: Routes that stream server-sent events (``_call_stream``).
STREAM_SUFFIX = "/events"


def _checks(strict: bool) -> list[Any]:
    from schemathesis.checks import load_all_checks, not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    load_all_checks()
    lenient = [not_a_server_error, content_type_conformance, response_schema_conformance]
    return [*lenient, status_code_conformance, negative_data_rejection] if strict else lenient


def operations(base_url: str) -> list[Any]:
    """The operations of the server's schema (it must load and be valid)."""
    import schemathesis

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=10)
    return [result.ok() for result in schema.get_all_operations()]


def fuzz_operation(
    operation: Any, base_url: str, examples: int, negative: bool,
    path_parameters: dict[str, Any] | None = None,
) -> int:  # fmt: skip
    """``examples`` cases of ``operation`` (its ``path_parameters`` fixed when given); the number
    run (0: the mode has no cases, e.g. no negative ones for a route without parameters). Raises
    the first failure, shrunk."""
    from schemathesis import GenerationMode

    mode = GenerationMode.NEGATIVE if negative else GenerationMode.POSITIVE
    checks = _checks(strict=not operation.path.startswith(LENIENT_PREFIXES))
    if negative and not _has_inputs(operation):
        return 0
    ran = 0

    streams = operation.path.endswith(STREAM_SUFFIX)

    @fuzz_settings(examples, verbosity=Verbosity.quiet)  # the failure's message has the request
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def case(case: Any) -> None:
        nonlocal ran
        ran += 1
        if streams:
            _call_stream(case, base_url)
        else:
            case.call_and_validate(base_url=base_url, checks=checks, timeout=30)

    try:
        case()
    except Unsatisfiable:
        return 0
    return ran


def _call_stream(case: Any, base_url: str) -> None:
    """An event-stream route (SSE): it streams for as long as the client stays, so the case is
    judged on its status and headers, the body left unread: no 5xx, and a 200 is
    ``text/event-stream`` (reading it, each case waited for the client's timeout: 30 s)."""
    import requests

    kwargs = case.as_transport_kwargs(base_url=base_url)
    with requests.request(**kwargs, stream=True, timeout=30) as response:
        status, kind = response.status_code, response.headers.get("content-type", "")
    curl = case.as_curl_command()
    assert status < 500, f"{status} from {curl}"
    assert status != 200 or kind.startswith("text/event-stream"), f"{kind!r} from {curl}"


def stored_session(server: FuzzServer) -> str:
    """A session with a text and image item and a reply stored: its id."""
    sock = FuzzSocket(server)
    try:
        sock.connect()
        image = "data:image/png;base64," + b64(encoded_image("PNG", 8, 8, "RGB", 0x336699))
        parts = [{"type": "input_text", "text": "What is this?"}, {"type": "input_image", "image_url": image}]
        sock.exchange([json.dumps({"type": "conversation.item.create", "item": {"content": parts}})])
        sock.check_turn()
        return sock.session_id
    finally:
        sock.close()


def _has_inputs(operation: Any) -> bool:
    sets = (operation.path_parameters, operation.query, operation.headers, operation.cookies)
    return any(len(inputs) for inputs in sets) or bool(len(operation.body))


def runs(base_url: str, session_id: str) -> list[tuple[Any, bool, dict[str, Any] | None]]:
    """What ``run_rest`` runs: every operation positive and negative; the session routes once
    more with ``session_id`` (a stored session: the generated ids are all unknown)."""
    planned: list[tuple[Any, bool, dict[str, Any] | None]] = []
    for operation in operations(base_url):
        planned += [(operation, False, None), (operation, True, None)]
        if "{session_id}" in operation.path:
            planned.append((operation, False, {"session_id": session_id}))
    return planned


def run_rest(base_url: str, examples: int, session_id: str) -> dict[str, Any]:
    """``runs``, each of ``examples`` cases: the cases run and the failures found."""
    cases, findings = 0, []
    for operation, negative, fixed in runs(base_url, session_id):
        try:
            cases += fuzz_operation(operation, base_url, examples, negative, fixed)
        except Exception as exc:  # noqa: BLE001 - a finding; the other operations still run
            mode = "negative" if negative else "positive"
            findings.append(f"{operation.label} ({mode}, {fixed}): {exc}"[:3000])
    return {"cases": cases, "findings": findings}
