"""Agent Lightning engines: local models behind an OpenAI-compatible API that returns token ids and logprobs.

``TransformersEngine("smollm2-135m").serve(port=0).url`` is an OpenAI base URL (``http://127.0.0.1:PORT/v1``);
so is ``VLLMEngine("smollm2-135m").start().url``, a vLLM server in a child process (vLLM is not imported here).
"""

from agentlightning_engine.errors import EngineError, InvalidRequest, ModelNotFound
from agentlightning_engine.model_source import KNOWN_MODELS
from agentlightning_engine.protocol import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from agentlightning_engine.server import EngineServer
from agentlightning_engine.transformers_engine import TransformersEngine
from agentlightning_engine.vllm_engine import VLLMEngine

__all__ = [
    "TransformersEngine",
    "VLLMEngine",
    "EngineServer",
    "ChatCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "KNOWN_MODELS",
    "EngineError",
    "InvalidRequest",
    "ModelNotFound",
]
