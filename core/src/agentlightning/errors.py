"""Errors raised by Agent Lightning. Every error says what was wrong and what to do."""

from __future__ import annotations

__all__ = [
    "AgentLightningError",
    "StoreError",
    "RolloutNotFound",
    "AttemptNotFound",
    "ResourcesNotFound",
    "InvalidStatusTransition",
    "StoreConflict",
    "StoreUnavailable",
    "StoreRequestError",
    "Unauthorized",
    "PromptTemplateError",
    "MissingTokenIds",
]


class AgentLightningError(Exception):
    """Base class of every error the project raises."""


class StoreError(AgentLightningError):
    """A store operation could not be carried out."""

    #: HTTP status the store server answers with for this error.
    http_status: int = 400


class RolloutNotFound(StoreError):
    """No rollout has the given id."""

    http_status = 404

    def __init__(self, rollout_id: str) -> None:
        super().__init__(f"No rollout with id {rollout_id!r} in this store; check the id with `agl runs list`.")
        self.rollout_id = rollout_id


class AttemptNotFound(StoreError):
    """No attempt has the given id (for the given rollout)."""

    http_status = 404

    def __init__(self, rollout_id: str, attempt_id: str) -> None:
        super().__init__(f"Rollout {rollout_id!r} has no attempt with id {attempt_id!r}.")
        self.rollout_id = rollout_id
        self.attempt_id = attempt_id


class ResourcesNotFound(StoreError):
    """No resources version has the given id, or none was published yet."""

    http_status = 404


class InvalidStatusTransition(StoreError):
    """A status change that the rollout / attempt state machine does not allow."""

    http_status = 409


class StoreConflict(StoreError):
    """The request conflicts with what the store holds (a reused resources id or span sequence id)."""

    http_status = 409


class StoreUnavailable(StoreError):
    """The store server could not be reached (after retrying where that is safe)."""

    http_status = 503


class StoreRequestError(StoreError):
    """The store server rejected a request as malformed (wrong types, bad JSON, too large)."""

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


class Unauthorized(StoreError):
    """The store server requires a token and the request had none or a wrong one."""

    http_status = 401


class PromptTemplateError(AgentLightningError):
    """A prompt template could not be rendered with the given values."""


class MissingTokenIds(AgentLightningError):
    """An LLM call has no recorded token ids, and the caller needs the exact ones (it never re-tokenizes)."""

    def __init__(self, span_id: str, agent_name: str | None, model: str | None) -> None:
        self.span_id = span_id
        who = f" of agent {agent_name!r}" if agent_name else ""
        super().__init__(
            f"LLM call {span_id}{who} (model {model!r}) has no recorded prompt/completion token ids, and training "
            "needs the exact tokens the model produced (re-tokenizing the text is not the same). Its upstream did "
            "not return them: hosted APIs do not. Serve the model with agentlightning-engine or vLLM behind "
            "agl.Gateway, with the gateway's request_token_ids left on."
        )
