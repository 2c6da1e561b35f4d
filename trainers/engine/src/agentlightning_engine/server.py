"""The engine over HTTP: an OpenAI-compatible API (``/v1/models``, ``/v1/chat/completions``) on starlette + uvicorn.

Errors have OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``: 400 ``invalid_request_error``
for a request that cannot be answered as asked, 401 without the API key, 404 for unknown paths, 500
``server_error`` when generation itself failed.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentlightning.server.serve import HttpServer, is_loopback
from agentlightning_engine.errors import EngineError, InvalidRequest

if TYPE_CHECKING:
    from agentlightning_engine.transformers_engine import TransformersEngine

__all__ = ["EngineServer", "create_app"]

log = logging.getLogger("agentlightning_engine")


def _error(status: int, message: str, kind: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status)


def _invalid(exc: InvalidRequest) -> JSONResponse:
    return _error(400, exc.message, "invalid_request_error", exc.param, exc.code)


def create_app(engine: TransformersEngine, *, api_key: str | None = None) -> Starlette:
    """The ASGI app serving ``engine``; with ``api_key``, requests must send ``Authorization: Bearer <key>``."""

    async def models(_: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": name,
                        "object": "model",
                        "created": int(time.time()),
                        "owned_by": "agentlightning",
                        "max_model_len": engine.max_model_len,
                        **({"parent": engine.model_name} if name != engine.model_name else {}),
                    }
                    for name in [engine.model_name, *engine.adapters]
                ],
            }
        )

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def chat_completions(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"The body is not valid JSON: {exc}", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "The body must be a JSON object.", "invalid_request_error")
        try:
            if body.get("stream"):
                chunks = await engine.stream_chat_completion(body)
                return StreamingResponse(_events(chunks), media_type="text/event-stream")
            completion = await engine.chat_completion(body)
        except InvalidRequest as exc:
            return _invalid(exc)
        except EngineError as exc:
            return _error(500, str(exc), "server_error")
        return Response(completion.model_dump_json(), media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        message = f"{request.method} {request.url.path} is not part of this API." if status in (404, 405) else str(exc)
        return _error(status, message, "invalid_request_error")

    app = Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: not_found},
    )
    if api_key is None:
        return app

    async def authorized(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            headers = dict(scope["headers"])
            given = headers.get(b"authorization", b"").decode("latin-1").removeprefix("Bearer ").strip()
            if not hmac.compare_digest(given.encode(), api_key.encode()):
                response = _error(
                    401,
                    "Missing or wrong API key: send Authorization: Bearer <key>.",
                    "invalid_request_error",
                    code="invalid_api_key",
                )
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return authorized  # type: ignore[return-value]


async def _events(chunks: AsyncIterator[Any]) -> AsyncIterator[str]:
    """Server-sent events: one ``data:`` line per chunk, then ``data: [DONE]``; a failure becomes an error event."""
    try:
        async for chunk in chunks:
            yield f"data: {chunk.to_json()}\n\n"
    except EngineError as exc:
        yield (
            "data: "
            + json.dumps({"error": {"message": str(exc), "type": "server_error", "param": None, "code": None}})
            + "\n\n"
        )
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    yield "data: [DONE]\n\n"


class EngineServer(HttpServer):
    """Serves an engine over HTTP: in a background thread (:meth:`start` / :meth:`stop`, or as a context manager)
    or in the foreground (:meth:`serve_forever`). ``port=0`` picks a free port; :attr:`url` is the OpenAI base URL.
    Binds to loopback unless given an API key."""

    def __init__(
        self, engine: TransformersEngine, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None
    ) -> None:
        if not is_loopback(host) and not api_key:
            raise EngineError(
                f"Refusing to serve the engine on {host!r} without an API key: anyone who can reach it could use it. "
                "Pass --api-key (or AGL_ENGINE_API_KEY), or bind to 127.0.0.1."
            )
        super().__init__(create_app(engine, api_key=api_key), host=host, port=port)
        self.engine = engine

    @property
    def url(self) -> str:
        """The OpenAI base URL, ``http://host:port/v1``."""
        return super().url + "/v1"

    def start(self) -> EngineServer:
        """Start serving in a background thread; returns once the server accepts connections (at once if it
        already does)."""
        if self._thread is None:
            super().start()
        return self

    def __enter__(self) -> EngineServer:
        return self.start()
