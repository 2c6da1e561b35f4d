"""Agent Lightning engines: local models behind an OpenAI-compatible API that returns token ids and logprobs.

``TransformersEngine("smollm2-135m").serve(port=0).url`` is an OpenAI base URL (``http://127.0.0.1:PORT/v1``).
"""

from agentlightning_engine.errors import EngineError, InvalidRequest, ModelNotFound
from agentlightning_engine.model_source import KNOWN_MODELS
from agentlightning_engine.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from agentlightning_engine.server import EngineServer
from agentlightning_engine.transformers_engine import TransformersEngine

__all__ = [
    "TransformersEngine",
    "EngineServer",
    "ChatCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "KNOWN_MODELS",
    "EngineError",
    "InvalidRequest",
    "ModelNotFound",
]
