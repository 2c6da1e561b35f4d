"""The methods :class:`~agentlightning_engine.VLLMEngine` adds to vLLM's workers (``--worker-extension-cls``).

This code runs inside vLLM's worker processes, not in the process that holds the engine, so it only imports vLLM
lazily and nothing of the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["VLLMWorkerExtension"]


class VLLMWorkerExtension:
    """Methods VLLMEngine adds to vLLM's workers (``--worker-extension-cls``), called over ``/collective_rpc``.

    They run inside vLLM's worker processes, where ``self`` is vLLM's worker.
    """

    def agl_reload_weights(self, weights_path: str) -> None:
        """vLLM's in-place ``reload_weights`` from a ``save_pretrained`` folder, then the tied output layer is
        prepared again: vLLM's CPU build computes logits from a packed copy of ``lm_head``, which its reload
        leaves stale when ``lm_head`` is the embedding matrix (SmolLM2 and most small models tie them)."""
        worker: Any = self
        vllm_config = importlib.import_module("vllm.config")
        with vllm_config.set_current_vllm_config(worker.vllm_config):
            worker.model_runner.reload_weights(weights_path=weights_path)
            model = worker.model_runner.get_model()
            lm_head = getattr(model, "lm_head", None)
            tied = getattr(getattr(model, "config", None), "tie_word_embeddings", False)
            on_cpu = importlib.import_module("vllm.platforms").current_platform.is_cpu()  # GPUs use lm_head as is
            if on_cpu and tied and lm_head is not None and getattr(lm_head, "quant_method", None) is not None:
                lm_head.quant_method.process_weights_after_loading(lm_head)
