"""The store server's OpenAPI schema: a valid document listing every route, true to what the server does.

The fuzzing tests (schemathesis against the server's own OpenAPI document, and hypothesis) check that no request,
however malformed, makes the server answer 5xx. They talk to a real server on 127.0.0.1 with a few records of each
kind in it (the ``fuzz_target`` fixture).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import hypothesis
import hypothesis.strategies as st
import jsonschema_rs
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)
from served_store import API, AUTH, KNOWN_IDS, TOKEN, FuzzTarget, Served, error_of

import agentlightning as agl
from agentlightning.server import create_app, openapi_schema


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


async def test_openapi_json_is_a_valid_openapi_3_1_document_listing_every_route(served: Served) -> None:
    response = await served.http.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert document["openapi"].startswith("3.1.")
    schemathesis.openapi.from_dict(document).validate()  # against the OpenAPI 3.1 meta-schema
    for ref in set(_refs(document)):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in document["components"]["schemas"], ref

    # Every route the app serves is documented with its methods, and nothing else is.
    store = agl.InMemoryStore()
    try:
        app = create_app(store, token=TOKEN).app  # type: ignore[attr-defined]
    finally:
        await store.close()
    served_routes = {
        (method.lower(), route.path)
        for route in app.routes
        if route.path != "/openapi.json"
        for method in route.methods
        if method != "HEAD"
    }
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == served_routes
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert "200" in operation["responses"] and "4XX" in operation["responses"], (method, path)
            if path != API + "/health":
                assert operation["security"] == [{"bearer": []}], (method, path)
            params = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert params == {part[1:-1] for part in path.split("/") if part.startswith("{")}, (method, path)
    assert document["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}


async def test_the_schema_tells_what_the_server_accepts_and_answers(served: Served) -> None:
    document = (await served.http.get("/openapi.json")).json()

    def validator(name: str) -> Any:
        return jsonschema_rs.validator_for({"$ref": f"#/components/schemas/{name}", **document})

    resources = {
        "llm": {"resource_type": "llm", "base_url": "http://127.0.0.1:8000/v1", "model": "m"},
        "prompt": {"resource_type": "prompt_template", "template": "Hi {name}"},
        "ckpt": {"resource_type": "checkpoint", "path": "/ckpt/1"},
    }
    assert validator("AddResourcesRequest").is_valid({"resources": resources})
    response = await served.http.post(API + "/resources", json={"resources": resources})
    assert response.status_code == 200
    # Each resource matches exactly one member of the union (oneOf), as the server reads it.
    validator("Resources").validate(response.json())
    latest = await served.http.get(API + "/resources/latest")
    validator("Resources").validate(latest.json())

    # What the schema refuses, the server refuses too.
    for body in (
        {"resources": {"llm": {"base_url": "http://x", "model": "m"}}},  # no resource_type: not an LLM
        {"resources": {"llm": {"resource_type": "llm", "model": "m"}}},
    ):
        assert not validator("AddResourcesRequest").is_valid(body)
        assert (await served.http.post(API + "/resources", json=body)).status_code == 422
    for retry_on, accepted in ((["failed", "timeout", "unresponsive"], True), (["cancelled"], False)):
        body = {"input": 1, "config": {"retry_on": retry_on}}
        assert validator("RolloutRequest").is_valid(body) is accepted
        assert (await served.http.post(API + "/rollouts", json=body)).status_code == (200 if accepted else 422)
    # Bodies whose fields all have defaults may be left out.
    assert (await served.http.post(API + "/rollouts/query")).status_code == 200
    assert document["paths"][API + "/rollouts/query"]["post"]["requestBody"]["required"] is False
    assert document["paths"][API + "/rollouts"]["post"]["requestBody"]["required"] is True


# --- fuzzing -----------------------------------------------------------------------------------
FUZZ_SCHEMA = schemathesis.openapi.from_dict(
    openapi_schema(),
    config=schemathesis.Config.from_dict(
        {
            "seed": 20240611,
            # Valid and invalid requests, ~20 of each kind per operation (plus the coverage phase), the same ones every run.
            "generation": {"max-examples": 20, "deterministic": True, "mode": "all"},
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)
# OTLP bodies are opaque bytes to the fuzzer: send them as generated.
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")


@FUZZ_SCHEMA.hook
def flatmap_path_parameters(context: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> Any:
    """Send some requests to records that exist, so the handlers run past the lookup."""
    if not isinstance(path_parameters, dict) or not path_parameters:
        return st.just(path_parameters)
    real = {name: KNOWN_IDS.get(name) for name in path_parameters}
    if not all(real.values()):
        return st.just(path_parameters)
    return st.just(path_parameters) | st.fixed_dictionaries(
        {name: st.sampled_from(ids or []) for name, ids in real.items()}
    )


def _assert_no_masked_internal_error(status: int, content_type: str, content: bytes) -> None:
    # The store wraps an unexpected exception (a bug) in a StoreError, which the server answers with 400:
    # such a 4xx is a server error in disguise.
    if status >= 400 and content_type.startswith("application/json"):
        error = json.loads(content).get("error", {})
        message = error.get("message", "")
        assert error.get("type") != "InternalError", message
        assert not message.startswith(("Store operation failed", "The store could not commit")), message


def no_masked_internal_error(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool | None:
    """Schemathesis check: no 4xx that stands for a failure inside the store."""
    _assert_no_masked_internal_error(
        response.status_code, response.headers.get("content-type", [""])[0], response.content
    )
    return None


# Besides no 5xx: responses match the schema, and what the schema calls valid is accepted. (Not the converse:
# pydantic's lax mode takes some values of the wrong JSON type, such as 0 for false, on purpose.)
FUZZ_CHECKS = [
    not_a_server_error,
    no_masked_internal_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
    unsupported_method,
    allow_header_conformance,
]


@FUZZ_SCHEMA.parametrize()
def test_no_generated_request_gets_a_server_error(case: schemathesis.Case, fuzz_target: FuzzTarget) -> None:
    checks = FUZZ_CHECKS
    if case.operation.path == "/v1/traces":  # the schema cannot say which bytes are a valid protobuf message
        checks = [check for check in checks if check is not positive_data_acceptance]
    case.call_and_validate(base_url=fuzz_target.url, headers=AUTH, checks=checks, timeout=60)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Keys of real fields, so that arbitrary values land in them too.
FIELDS = st.sampled_from(
    [
        "input",
        "rollout",
        "rollouts",
        "spans",
        "status",
        "config",
        "metadata",
        "worker_id",
        "resources",
        "resources_id",
        "rollout_ids",
        "timeout",
        "limit",
        "offset",
        "mode",
        "max_attempts",
        "name",
        "trace_id",
    ]
)
BODIES = JSON | st.dictionaries(FIELDS, JSON, max_size=4)
WRITE_OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi_schema()["paths"].items()
    for method in item
    if method in ("post", "patch")
]


def _write_requests(http: httpx.Client, target: FuzzTarget, real: bool) -> Iterator[tuple[str, str]]:
    """Every POST / PATCH operation, with the ids of a real rollout and its latest attempt, or unknown ones."""
    ids = {"rollout_id": "ro-missing", "attempt_id": "at-missing", "resources_id": "rs-missing"}
    if real:
        ids["rollout_id"] = target.rollout_ids[0]
        ids["attempt_id"] = http.get(f"{API}/rollouts/{ids['rollout_id']}/attempts").json()[-1]["attempt_id"]
    for method, path in WRITE_OPERATIONS:
        for name, value in ids.items():
            path = path.replace("{" + name + "}", value)
        yield method, path


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None)
@hypothesis.given(body=BODIES, real=st.booleans())
def test_arbitrary_json_to_every_write_endpoint_never_gets_a_server_error(
    fuzz_target: FuzzTarget, body: Any, real: bool
) -> None:
    content = json.dumps(body).encode()
    with httpx.Client(base_url=fuzz_target.url, headers=AUTH, timeout=60) as http:
        for method, path in _write_requests(http, fuzz_target, real):
            response = http.request(method, path, content=content, headers={"content-type": "application/json"})
            assert response.status_code < 500, (method, path, response.text)
            _assert_no_masked_internal_error(response.status_code, response.headers["content-type"], response.content)
            if response.status_code >= 400:
                assert error_of(response)["message"]


@hypothesis.settings(max_examples=25, deadline=None, derandomize=True, database=None)
@hypothesis.given(raw=st.binary(max_size=512), real=st.booleans())
def test_arbitrary_bytes_to_every_write_endpoint_never_get_a_server_error(
    fuzz_target: FuzzTarget, raw: bytes, real: bool
) -> None:
    with httpx.Client(base_url=fuzz_target.url, headers=AUTH, timeout=60) as http:
        for method, path in _write_requests(http, fuzz_target, real):
            for content_type in ("application/json", "application/x-protobuf"):
                response = http.request(method, path, content=raw, headers={"content-type": content_type})
                assert response.status_code < 500, (method, path, response.text)
                _assert_no_masked_internal_error(
                    response.status_code, response.headers["content-type"], response.content
                )
