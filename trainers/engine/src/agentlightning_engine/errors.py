"""Errors raised by the engines. Every error says what was wrong and what to do."""

from __future__ import annotations

from agentlightning.errors import AgentLightningError

__all__ = ["EngineError", "ModelNotFound", "InvalidRequest"]


class EngineError(AgentLightningError):
    """An engine could not load a model or answer a request."""


class ModelNotFound(EngineError):
    """The model name or path names nothing that can be loaded."""


class InvalidRequest(EngineError):
    """A request the engine cannot answer as asked; the server answers it with an OpenAI-shaped 400."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
