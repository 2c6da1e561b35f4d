"""The store server: any store, over a REST/JSON API with an OpenAPI schema, plus OTLP/HTTP trace ingest."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentlightning.errors import StoreError
from agentlightning.server import models as m
from agentlightning.store.base import LightningStore, StoreStatistics
from agentlightning.store.sqlite import SqliteStore
from agentlightning.types import Attempt, AttemptedRollout, AttemptStatus, Resources, Rollout, RolloutRequest, Span

__all__ = ["create_app", "API_PREFIX", "DEFAULT_MAX_BODY_BYTES"]

API_PREFIX = "/api/v1"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
log = logging.getLogger("agentlightning.server")

Handler = Callable[[LightningStore, Request, Any], Awaitable[Any]]


@dataclass
class _Operation:
    """One endpoint: how it is called, what it takes and returns, and what it does to the store."""

    method: str
    path: str
    summary: str
    handler: Handler
    body: type[BaseModel] | None = None
    response: Any = None
    query: list[str] = field(default_factory=list)
    raw_json: bool = False  # the handler returns ready JSON text

    @property
    def adapter(self) -> TypeAdapter[Any]:
        return TypeAdapter(self.response)


def _given(body: BaseModel) -> dict[str, Any]:
    """The fields the request actually set, as models (not dicts)."""
    return {name: getattr(body, name) for name in body.model_fields_set}


def _operations() -> list[_Operation]:
    async def enqueue(store: LightningStore, _: Request, body: RolloutRequest) -> Rollout:
        (rollout,) = await store.enqueue_many_rollouts([body])
        return rollout

    async def enqueue_many(store: LightningStore, _: Request, body: m.EnqueueManyRequest) -> list[Rollout]:
        return await store.enqueue_many_rollouts(body.rollouts)

    async def start_rollout(store: LightningStore, _: Request, body: m.StartRolloutRequest) -> AttemptedRollout:
        return await store.start_rollout(body.rollout, worker_id=body.worker_id)

    async def query_rollouts(store: LightningStore, _: Request, body: m.QueryRolloutsRequest) -> list[Rollout]:
        return await store.query_rollouts(**body.model_dump())

    async def wait(store: LightningStore, _: Request, body: m.WaitRequest) -> list[Rollout]:
        return await store.wait_for_rollouts(body.rollout_ids, timeout=body.timeout)

    async def dequeue(store: LightningStore, _: Request, body: m.DequeueRequest) -> AttemptedRollout | None:
        return await store.dequeue_rollout(worker_id=body.worker_id)

    async def dequeue_many(store: LightningStore, _: Request, body: m.DequeueManyRequest) -> list[AttemptedRollout]:
        return await store.dequeue_many_rollouts(body.limit, worker_id=body.worker_id, wait=body.wait)

    async def get_rollout(store: LightningStore, request: Request, _: None) -> Rollout:
        return await store.get_rollout_by_id(request.path_params["rollout_id"])

    async def update_rollout(store: LightningStore, request: Request, body: m.UpdateRolloutRequest) -> Rollout:
        return await store.update_rollout(request.path_params["rollout_id"], **_given(body))

    async def query_attempts(store: LightningStore, request: Request, _: None) -> list[Attempt]:
        return await store.query_attempts(request.path_params["rollout_id"])

    async def start_attempt(store: LightningStore, request: Request, body: m.StartAttemptRequest) -> AttemptedRollout:
        return await store.start_attempt(request.path_params["rollout_id"], worker_id=body.worker_id)

    async def update_attempt(store: LightningStore, request: Request, body: m.UpdateAttemptRequest) -> Attempt:
        p = request.path_params
        return await store.update_attempt(p["rollout_id"], p["attempt_id"], **_given(body))

    async def heartbeat(store: LightningStore, request: Request, _: None) -> Attempt:
        return await store.heartbeat(request.path_params["rollout_id"], request.path_params["attempt_id"])

    async def query_spans(store: LightningStore, request: Request, _: None) -> Any:
        rollout_id = request.path_params["rollout_id"]
        attempt_id = request.query_params.get("attempt_id") or None
        if isinstance(store, SqliteStore):
            return await store.query_spans_json(rollout_id, attempt_id)
        spans = await store.query_spans(rollout_id, attempt_id)
        return TypeAdapter(list[Span]).dump_json(spans).decode()

    async def add_spans(store: LightningStore, _: Request, body: m.AddSpansRequest) -> m.AddSpansResponse:
        stored = await store.add_many_spans(body.spans)
        return m.AddSpansResponse(sequence_ids=[s.sequence_id or 0 for s in stored])

    async def add_resources(store: LightningStore, _: Request, body: m.AddResourcesRequest) -> Resources:
        return await store.add_resources(body.resources, resources_id=body.resources_id)

    async def latest_resources(store: LightningStore, _: Request, __: None) -> Resources | None:
        return await store.get_latest_resources()

    async def get_resources(store: LightningStore, request: Request, _: None) -> Resources:
        return await store.get_resources_by_id(request.path_params["resources_id"])

    async def statistics(store: LightningStore, _: Request, __: None) -> StoreStatistics:
        return await store.statistics()

    async def health(_: LightningStore, __: Request, ___: None) -> m.Health:
        return m.Health()

    rollout = "/rollouts/{rollout_id}"
    attempt = rollout + "/attempts/{attempt_id}"
    return [
        _Operation("POST", "/rollouts", "Enqueue one rollout", enqueue, RolloutRequest, Rollout),
        _Operation(
            "POST", "/rollouts/batch", "Enqueue many rollouts", enqueue_many, m.EnqueueManyRequest, list[Rollout]
        ),
        _Operation(
            "POST",
            "/rollouts/start",
            "Create a rollout and its first attempt",
            start_rollout,
            m.StartRolloutRequest,
            AttemptedRollout,
        ),
        _Operation("POST", "/rollouts/query", "List rollouts", query_rollouts, m.QueryRolloutsRequest, list[Rollout]),
        _Operation("POST", "/rollouts/wait", "Wait for rollouts to finish", wait, m.WaitRequest, list[Rollout]),
        _Operation(
            "POST",
            "/queue/dequeue",
            "Take the next rollout from the queue",
            dequeue,
            m.DequeueRequest,
            AttemptedRollout | None,
        ),
        _Operation(
            "POST",
            "/queue/dequeue-many",
            "Take up to `limit` rollouts from the queue, waiting up to `wait` s while it is empty",
            dequeue_many,
            m.DequeueManyRequest,
            list[AttemptedRollout],
        ),
        _Operation("GET", rollout, "Get a rollout", get_rollout, None, Rollout),
        _Operation("PATCH", rollout, "Change a rollout", update_rollout, m.UpdateRolloutRequest, Rollout),
        _Operation("GET", rollout + "/attempts", "List a rollout's attempts", query_attempts, None, list[Attempt]),
        _Operation(
            "POST", rollout + "/attempts", "Start a new attempt", start_attempt, m.StartAttemptRequest, AttemptedRollout
        ),
        _Operation("PATCH", attempt, "Change an attempt", update_attempt, m.UpdateAttemptRequest, Attempt),
        _Operation("POST", attempt + "/heartbeat", "Report a worker alive", heartbeat, None, Attempt),
        _Operation(
            "GET",
            rollout + "/spans",
            "List a rollout's spans",
            query_spans,
            None,
            list[Span],
            ["attempt_id"],
            raw_json=True,
        ),
        _Operation("POST", "/spans", "Record spans", add_spans, m.AddSpansRequest, m.AddSpansResponse),
        _Operation("POST", "/resources", "Publish resources", add_resources, m.AddResourcesRequest, Resources),
        _Operation("GET", "/resources/latest", "Get the newest resources", latest_resources, None, Resources | None),
        _Operation("GET", "/resources/{resources_id}", "Get one resources version", get_resources, None, Resources),
        _Operation("GET", "/statistics", "Counts of what the store holds", statistics, None, StoreStatistics),
        _Operation("GET", "/health", "Liveness (needs no token)", health, None, m.Health),
    ]


def error_response(status: int, kind: str, message: str, details: list[dict[str, Any]] | None = None) -> Response:
    """The JSON error body every failure answers with."""
    body = m.ErrorResponse(error=m.ErrorDetail(type=kind, message=message, details=details))
    return Response(body.model_dump_json(exclude_none=True), status_code=status, media_type="application/json")


def _validation_error(exc: ValidationError) -> Response:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in errors[:10]]
    details = [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in errors[:100]]
    return error_response(422, "ValidationError", "Invalid request: " + "; ".join(parts), details)


def _endpoint(store: LightningStore, op: _Operation) -> Callable[[Request], Awaitable[Response]]:
    adapter = op.adapter

    async def endpoint(request: Request) -> Response:
        try:
            body = None
            if op.body is not None:
                raw = await request.body()
                body = op.body.model_validate_json(raw or b"{}")
            result = await op.handler(store, request, body)
        except ValidationError as exc:
            return _validation_error(exc)
        except StoreError as exc:
            return error_response(exc.http_status, type(exc).__name__, str(exc))
        except Exception as exc:  # a bug: say so, keep serving
            log.exception("Unexpected error in %s %s", op.method, op.path)
            return error_response(500, "InternalError", f"The store server failed unexpectedly: {type(exc).__name__}")
        content = result if op.raw_json else adapter.dump_json(result)
        return Response(content, media_type="application/json")

    return endpoint


def openapi_schema(operations: list[_Operation] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API, generated from the same table that routes requests."""
    operations = operations or _operations()
    models: list[Any] = [m.ErrorResponse]
    for op in operations:
        if op.body is not None:
            models.append(op.body)
    _, defs = models_json_schema(
        [(model, "validation") for model in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, Any] = {}
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for op in operations:
        response_schema = TypeAdapter(op.response).json_schema(
            ref_template="#/components/schemas/{model}", mode="serialization"
        )
        schemas.update(response_schema.pop("$defs", {}))
        spec: dict[str, Any] = {
            "summary": op.summary,
            "operationId": op.summary.lower().replace(" ", "_").replace("'", ""),
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": response_schema}}},
                "4XX": {"description": "The request was wrong", "content": {"application/json": {"schema": error_ref}}},
            },
        }
        params = [
            {"name": name[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for name in op.path.split("/")
            if name.startswith("{")
        ]
        params += [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}} for q in op.query]
        if params:
            spec["parameters"] = params
        if op.body is not None:
            spec["requestBody"] = {
                # The server reads a missing body as {}: it is optional where every field is.
                "required": any(f.is_required() for f in op.body.model_fields.values()),
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{op.body.__name__}"}}},
            }
        if op.path != "/health":
            spec["security"] = [{"bearer": []}]
        paths.setdefault(API_PREFIX + op.path, {})[op.method.lower()] = spec
    _describe_validators(schemas)
    paths["/v1/traces"] = {
        "post": {
            "summary": "OTLP/HTTP trace ingest (application/x-protobuf)",
            "operationId": "otlp_traces",
            "security": [{"bearer": []}],
            "requestBody": {
                "required": True,
                "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "200": {"description": "ExportTraceServiceResponse"},
                "4XX": {"description": "The request was wrong"},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Agent Lightning store", "version": "1"},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _describe_validators(schemas: dict[str, Any]) -> None:
    """Say in the schema what validation code enforces beyond the types, so what it calls valid is accepted."""
    # AnyResource picks its member by resource_type alone: "llm" and "prompt_template" go to LLM and
    # PromptTemplate (so the field is needed there), any other type to GenericResource. Without this, the
    # union's oneOf matched an LLM or PromptTemplate twice (GenericResource allows any fields) and every
    # response holding one broke the schema, while an LLM without resource_type passed it but not the server.
    for name in ("LLM", "PromptTemplate"):
        if name in schemas:
            schemas[name]["required"] = ["resource_type", *schemas[name].get("required", [])]
    if "GenericResource" in schemas:
        schemas["GenericResource"]["properties"]["resource_type"]["not"] = {"enum": ["llm", "prompt_template"]}
    # RolloutConfig's retry_on validator takes failures only.
    if "RolloutConfig" in schemas:
        retryable = [AttemptStatus.FAILED.value, AttemptStatus.TIMEOUT.value, AttemptStatus.UNRESPONSIVE.value]
        schemas["RolloutConfig"]["properties"]["retry_on"]["items"] = {"type": "string", "enum": retryable}


class _Guard:
    """Checks the token and the body size before anything else runs, and buffers the body."""

    def __init__(self, app: ASGIApp, token: str | None, max_body_bytes: int) -> None:
        self.app = app
        self.token = None if token is None else token.encode()
        self.max_body_bytes = max_body_bytes

    def _authorized(self, given: bytes) -> bool:
        assert self.token is not None
        # RFC 9110 section 11.1: the scheme is case-insensitive ("bearer" from some OTLP header configs).
        scheme, _, credentials = given.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(credentials.strip(b" "), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.token is not None and scope["path"] != API_PREFIX + "/health":
            given = headers.get(b"authorization", b"")
            if not self._authorized(given):
                what = "had no token" if not given else "had a wrong token"
                response = error_response(
                    401,
                    "Unauthorized",
                    f"This store server requires a token; the request {what}. Send 'Authorization: Bearer <token>'.",
                )
                await response(scope, receive, send)
                return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            "RequestTooLarge",
            f"Request body is larger than the server's limit of {self.max_body_bytes} bytes; send smaller batches.",
        )
        await response(scope, receive, send)


def create_app(
    store: LightningStore, *, token: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> ASGIApp:
    """An ASGI app serving ``store``. With a ``token``, every request but ``/health`` must carry it."""
    from agentlightning.server.otlp import otlp_endpoint

    operations = _operations()
    routes = [Route(API_PREFIX + op.path, _endpoint(store, op), methods=[op.method]) for op in operations]
    schema = json.dumps(openapi_schema(operations))
    routes.append(Route("/openapi.json", lambda _: Response(schema, media_type="application/json"), methods=["GET"]))
    routes.append(Route("/v1/traces", otlp_endpoint(store, max_body_bytes=max_body_bytes), methods=["POST"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, "NotFound", f"No endpoint {request.method} {request.url.path}; see /openapi.json.")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        # RFC 9110 requires Allow on a 405; Starlette's own lists only the first route matching the path.
        # Where a literal path also fits a template (/rollouts/batch and /rollouts/{rollout_id}), the literal
        # one is the resource meant.
        matching = [route for route in routes if route.matches(request.scope)[0] != Match.NONE]
        fewest = min((len(route.param_convertors) for route in matching), default=0)
        allowed = sorted(
            {method for route in matching if len(route.param_convertors) == fewest for method in route.methods or ()}
        )
        response = error_response(
            405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}."
        )
        response.headers["allow"] = ", ".join(allowed)
        return response

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
    return _Guard(app, token, max_body_bytes)
