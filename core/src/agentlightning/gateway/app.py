"""The gateway's HTTP side: an OpenAI-compatible proxy that records every call into its rollout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
from pydantic_core import from_json, to_json
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from agentlightning import semconv
from agentlightning.errors import StoreError
from agentlightning.gateway.record import StreamAssembler, parse_traceparent, request_attributes, response_attributes
from agentlightning.store.base import LightningStore
from agentlightning.tracer.propagation import AGENT_HEADER, CALLER_HEADER, parse_caller_header
from agentlightning.types import Span, SpanKind, SpanStatus, StatusCode

__all__ = ["GatewayConfig", "GatewayStatistics", "create_gateway_app", "openai_error"]

log = logging.getLogger("agentlightning.gateway")

ROLLOUT_HEADER = "x-agentlightning-rollout-id"
ATTEMPT_HEADER = "x-agentlightning-attempt-id"
_OPERATIONS = {
    "chat/completions": semconv.GEN_AI_OPERATION_CHAT,
    "completions": semconv.GEN_AI_OPERATION_TEXT_COMPLETION,
}
# Hop-by-hop and recomputed headers are not forwarded either way.
_DROP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive", "accept-encoding"}


@dataclass
class GatewayConfig:
    """How the gateway talks to its upstream."""

    upstream: str
    #: Ask the upstream for token ids and logprobs (vLLM's ``return_token_ids`` / ``logprobs``). Turn off for
    #: hosted APIs that reject unknown parameters; the calls are still recorded, without token ids.
    request_token_ids: bool = True
    upstream_api_key: str | None = None
    timeout: float = 600.0
    #: Agent name -> the model name its calls go upstream with (e.g. the LoRA adapter an engine serves for that
    #: agent), whatever model the agent asked for. Calls of other agents, or of no agent, go as they are.
    agent_models: dict[str, str] = field(default_factory=dict)


@dataclass
class GatewayStatistics:
    """Counts of what the gateway did."""

    calls: int = 0
    recorded: int = 0
    unattributed: int = 0
    unknown_rollout: int = 0
    upstream_errors: int = 0
    dropped: int = 0
    by_status: dict[int, int] = field(default_factory=dict)


def openai_error(status: int, message: str, kind: str, code: str | None = None, param: str | None = None) -> Response:
    """An error in the shape OpenAI clients parse."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return Response(to_json(body), status_code=status, media_type="application/json")


@dataclass
class _Call:
    """One request in flight: who it belongs to, and the span being built."""

    operation: str
    rollout_id: str | None
    attempt_id: str | None
    agent: str | None
    traceparent: str | None
    body: dict[str, Any]
    start: float = field(default_factory=time.time)
    attributes: dict[str, Any] = field(default_factory=dict)


class _Proxy:
    def __init__(self, store: LightningStore, config: GatewayConfig) -> None:
        self.store = store
        self.config = config
        self.upstream = config.upstream.rstrip("/")
        self.stats = GatewayStatistics()
        self._known_attempts: set[tuple[str, str]] = set()
        self._pending: set[asyncio.Future[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=self.config.timeout)
            )
        return self._session

    async def close(self) -> None:
        await self.flush()
        if self._session is not None:
            await self._session.close()

    def _headers(self, request: Request) -> dict[str, str]:
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _DROP_HEADERS and not k.lower().startswith("x-agentlightning-")
        }
        if self.config.upstream_api_key:
            headers["authorization"] = f"Bearer {self.config.upstream_api_key}"
        return headers

    async def _attempt_exists(self, rollout_id: str, attempt_id: str) -> bool:
        if (rollout_id, attempt_id) in self._known_attempts:
            return True
        try:
            attempts = await self.store.query_attempts(rollout_id)
        except StoreError:
            return False
        if any(a.attempt_id == attempt_id for a in attempts):
            self._known_attempts.add((rollout_id, attempt_id))
            return True
        return False

    async def _record(self, call: _Call, status: StatusCode = StatusCode.UNSET, error: str | None = None) -> None:
        """Hand the call's span to the store before the agent gets its answer.

        Returns once the write is ordered before anything later on the store (``submit_spans``), so a
        finished rollout holds all its calls; the SQLite stores queue it and commit it right after, with
        concurrent calls sharing one commit. A span the store refuses is logged and counted, and the agent
        still gets its answer.
        """
        if call.rollout_id is None or call.attempt_id is None:
            return
        attributes = call.attributes
        if call.agent:
            attributes[semconv.GEN_AI_AGENT_NAME] = call.agent
        parent = parse_traceparent(call.traceparent)
        if call.traceparent:
            attributes[semconv.AGL_CALLER_TRACEPARENT] = call.traceparent
        model = call.body.get("model") if isinstance(call.body.get("model"), str) else "unknown"
        # Built here from values already checked by type (record.py), so it skips re-validation.
        span = Span.model_construct(
            sequence_id=None,
            links=[],
            events=[],
            resource={},
            rollout_id=call.rollout_id,
            attempt_id=call.attempt_id,
            name=f"{call.operation} {model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=call.start,
            end_time=time.time(),
            trace_id=parent[0] if parent else f"{random.getrandbits(128):032x}",
            span_id=f"{random.getrandbits(64):016x}",
            parent_id=parent[1] if parent else None,
            status=SpanStatus(status_code=status, description=error),
        )
        try:
            written = await self.store.submit_spans([span])
        except (StoreError, ValueError) as exc:
            self._dropped(call, exc)
            return
        self._pending.add(written)
        written.add_done_callback(lambda future: self._written(call, future))

    def _written(self, call: _Call, future: asyncio.Future[Any]) -> None:
        self._pending.discard(future)
        if future.cancelled():
            self._dropped(call, "the write was cancelled")
        elif (exc := future.exception()) is not None:
            self._dropped(call, exc)
        else:
            self.stats.recorded += 1

    def _dropped(self, call: _Call, reason: object) -> None:
        self.stats.dropped += 1
        log.error(
            "Could not record the LLM call of rollout %s attempt %s: %s", call.rollout_id, call.attempt_id, reason
        )

    async def flush(self) -> None:
        """Wait until every span handed to the store is written (or refused)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def _fail(
        self, call: _Call | None, status: int, message: str, kind: str, code: str | None = None
    ) -> Response:
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        if call is not None:
            call.attributes[semconv.ERROR_TYPE] = code or kind
            call.attributes["http.response.status_code"] = status
            await self._record(call, StatusCode.ERROR, message)
        return openai_error(status, message, kind, code)

    async def models(self, request: Request) -> Response:
        try:
            async with self.session().get(self.upstream + "/models", headers=self._headers(request)) as upstream:
                return Response(await upstream.read(), status_code=upstream.status, media_type="application/json")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return await self._fail(
                None,
                502,
                f"The gateway could not reach its upstream {self.upstream}: {exc}",
                "upstream_error",
                "upstream_unreachable",
            )

    async def complete(
        self, request: Request, endpoint: str, rollout_id: str | None, attempt_id: str | None, agent: str | None
    ) -> Response:
        self.stats.calls += 1
        operation = _OPERATIONS[endpoint]
        rollout_id = rollout_id or request.headers.get(ROLLOUT_HEADER)
        attempt_id = attempt_id or request.headers.get(ATTEMPT_HEADER)
        caller_traceparent, caller_agent = parse_caller_header(request.headers.get(CALLER_HEADER))
        # The caller's own standard headers (set by hand, or by its OpenTelemetry instrumentation) win over the
        # core's x-agentlightning-caller, which a request gets on top of them.
        agent = agent or request.headers.get(AGENT_HEADER) or caller_agent
        if (rollout_id is None) != (attempt_id is None):
            return await self._fail(
                None,
                400,
                "Name both the rollout and the attempt (URL or x-agentlightning-* headers), or neither.",
                "invalid_request_error",
                "incomplete_attribution",
            )
        if rollout_id is None:
            self.stats.unattributed += 1
        elif not await self._attempt_exists(rollout_id, attempt_id or ""):
            self.stats.unknown_rollout += 1
            log.warning("Call for unknown rollout %s attempt %s refused", rollout_id, attempt_id)
            return await self._fail(
                None,
                404,
                f"The store has no rollout {rollout_id!r} with attempt {attempt_id!r}; the call was not forwarded.",
                "invalid_request_error",
                "rollout_not_found",
            )
        raw = await request.body()
        call = _Call(
            operation, rollout_id, attempt_id, agent, request.headers.get("traceparent") or caller_traceparent, {}
        )
        call.attributes = {semconv.GEN_AI_OPERATION_NAME: operation}
        try:
            body = from_json(raw)
        except ValueError as exc:
            return await self._fail(
                call, 400, f"The request body is not valid JSON: {exc}", "invalid_request_error", "invalid_json"
            )
        if not isinstance(body, dict):
            return await self._fail(
                call, 400, "The request body must be a JSON object.", "invalid_request_error", "invalid_body"
            )
        if agent is not None and (routed := self.config.agent_models.get(agent)) is not None:
            body["model"] = routed  # recorded as the model asked for: the one that answers
        call.body = body
        call.attributes = request_attributes(body, operation)
        wants_logprobs = bool(body.get("logprobs"))
        upstream_body = dict(body)
        if self.config.request_token_ids:
            upstream_body["return_token_ids"] = True
            if not wants_logprobs:
                upstream_body["logprobs"] = True if operation == semconv.GEN_AI_OPERATION_CHAT else 0
        url = f"{self.upstream}/{endpoint}"
        headers = self._headers(request)
        headers["content-type"] = "application/json"
        if call.traceparent and "traceparent" not in request.headers:  # it came in x-agentlightning-caller
            headers["traceparent"] = call.traceparent  # the upstream's own tracing joins the caller's trace
        if body.get("stream"):
            return await self._stream(call, url, headers, upstream_body, wants_logprobs)
        try:
            async with self.session().post(url, data=to_json(upstream_body), headers=headers) as upstream:
                status, payload = upstream.status, await upstream.read()
        except TimeoutError:
            return await self._upstream_down(
                call,
                504,
                f"The upstream {self.upstream} did not answer within {self.config.timeout:g} s.",
                "upstream_timeout",
            )
        except aiohttp.ClientError as exc:
            return await self._upstream_down(
                call, 502, f"The gateway could not reach its upstream {self.upstream}: {exc}", "upstream_unreachable"
            )
        if status >= 400:
            return await self._upstream_error(call, status, payload)
        try:
            response = from_json(payload)
        except ValueError:
            return await self._upstream_down(
                call,
                502,
                f"The upstream {self.upstream} answered with something that is not JSON.",
                "upstream_invalid_response",
            )
        call.attributes.update(response_attributes(response, operation))
        await self._record(call)
        self.stats.by_status[200] = self.stats.by_status.get(200, 0) + 1
        if self.config.request_token_ids and not wants_logprobs:
            for choice in response.get("choices") or []:
                if isinstance(choice, dict):
                    choice["logprobs"] = None
            payload = to_json(response)
        return Response(payload, media_type="application/json")

    async def _upstream_error(self, call: _Call, status: int, payload: bytes) -> Response:
        """The upstream answered an HTTP error: record it, and pass it on (OpenAI-shaped if it was not)."""
        self.stats.upstream_errors += 1
        self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
        upstream_message = _error_message(payload)
        message = upstream_message or f"The upstream answered HTTP {status}."
        call.attributes[semconv.ERROR_TYPE] = str(status)
        call.attributes["http.response.status_code"] = status
        await self._record(call, StatusCode.ERROR, message)
        if upstream_message is None:
            return openai_error(status, message, "upstream_error", "upstream_error")
        return Response(payload, status_code=status, media_type="application/json")

    async def _upstream_down(self, call: _Call, status: int, message: str, code: str) -> Response:
        self.stats.upstream_errors += 1
        return await self._fail(call, status, message, "upstream_error", code)

    async def _stream(
        self, call: _Call, url: str, headers: dict[str, str], body: dict[str, Any], wants_logprobs: bool
    ) -> Response:
        try:
            upstream = await self.session().post(url, data=to_json(body), headers=headers)
        except TimeoutError:
            return await self._upstream_down(
                call,
                504,
                f"The upstream {self.upstream} did not answer within {self.config.timeout:g} s.",
                "upstream_timeout",
            )
        except aiohttp.ClientError as exc:
            return await self._upstream_down(
                call, 502, f"The gateway could not reach its upstream {self.upstream}: {exc}", "upstream_unreachable"
            )
        if upstream.status >= 400:
            payload = await upstream.read()
            upstream.release()
            return await self._upstream_error(call, upstream.status, payload)
        assembler = StreamAssembler(call.operation)
        strip = self.config.request_token_ids and not wants_logprobs

        recorded = False

        async def record(error: str | None = None) -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                call.attributes.update(response_attributes(assembler.response(), call.operation))
                await self._record(call, StatusCode.ERROR if error else StatusCode.UNSET, error)

        async def relay() -> AsyncIterator[bytes]:
            buffer = b""
            try:
                async for piece in upstream.content.iter_any():
                    buffer += piece
                    *lines, buffer = buffer.split(b"\n")
                    out = []
                    for line in lines:
                        if line.strip() == b"data: [DONE]":
                            await record()  # stored before the agent sees the end of the answer
                        out.append(_relay_line(line, assembler, strip))
                    if out:
                        yield b"\n".join(out) + b"\n"
                await record()
                if buffer:
                    yield _relay_line(buffer, assembler, strip)
            except (aiohttp.ClientError, TimeoutError) as exc:
                await record(f"The upstream stream broke off: {exc}")
                raise
            finally:
                upstream.release()
                if not recorded:  # the client went away mid-stream: keep what there was
                    call.attributes.update(response_attributes(assembler.response(), call.operation))
                    task = asyncio.ensure_future(
                        self._record(call, StatusCode.ERROR, "The client disconnected before the end of the stream.")
                    )
                    self._pending.add(task)  # keep it alive until written
                    task.add_done_callback(self._pending.discard)

        self.stats.by_status[200] = self.stats.by_status.get(200, 0) + 1
        return StreamingResponse(relay(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


def _relay_line(line: bytes, assembler: StreamAssembler, strip_logprobs: bool) -> bytes:
    if not line.startswith(b"data:"):
        return line
    data = line[5:].strip()
    if data == b"[DONE]" or not data:
        return line
    try:
        chunk = from_json(data)
    except ValueError:
        return line
    if isinstance(chunk, dict):
        assembler.add(chunk)
        if strip_logprobs:
            for choice in chunk.get("choices") or []:
                if isinstance(choice, dict):
                    choice["logprobs"] = None
            return b"data: " + to_json(chunk)
    return line


def _error_message(payload: bytes) -> str | None:
    try:
        error = from_json(payload).get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message) if message else None
    except (ValueError, AttributeError):
        return None


def create_gateway_app(store: LightningStore, config: GatewayConfig) -> tuple[Any, _Proxy]:
    """The ASGI app of a gateway recording into ``store``, and its proxy (for statistics)."""
    proxy = _Proxy(store, config)

    def completion(endpoint: str) -> Any:
        async def handler(request: Request) -> Response:
            params = request.path_params
            rid = params.get("rollout_id")
            aid = params.get("attempt_id")
            agent = params.get("agent")
            return await proxy.complete(
                request,
                endpoint,
                None if rid is None else unquote(rid),
                None if aid is None else unquote(aid),
                None if agent is None else unquote(agent),
            )

        return handler

    routes = []
    for prefix in (
        "",
        "/rollouts/{rollout_id}/attempts/{attempt_id}",
        "/rollouts/{rollout_id}/attempts/{attempt_id}/agents/{agent}",
    ):
        for endpoint in _OPERATIONS:
            routes.append(Route(f"{prefix}/v1/{endpoint}", completion(endpoint), methods=["POST"]))
        routes.append(Route(f"{prefix}/v1/models", proxy.models, methods=["GET"]))

    async def not_found(request: Request, exc: Exception) -> Response:
        return openai_error(
            404,
            f"The gateway has no endpoint {request.method} {request.url.path}.",
            "invalid_request_error",
            "not_found",
        )

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return openai_error(
            405,
            f"{request.method} is not allowed on {request.url.path}.",
            "invalid_request_error",
            "method_not_allowed",
        )

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await proxy.close()

    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed}, lifespan=lifespan)
    return app, proxy
