"""Mixed precision: which passes run in bfloat16, and where that pays.

With ``precision="bf16"`` the forward and backward passes of a step run under ``torch.autocast`` in bfloat16:
matrix products take bfloat16 copies of the float32 weights, while the weights, their gradients and AdamW's
moments stay float32 (the "master weights"; Micikevicius et al. 2018, with bfloat16 instead of float16, so no
loss scaling). The logprobs are taken in float32 from the logits (:func:`~agentlightning_rl.logprobs.
completion_logprobs` upcasts them before the ``logsumexp``). The engine generates under the same autocast, so
the behaviour logprobs of the importance ratio come from the same arithmetic as the new ones.

bfloat16 pays only where the hardware computes it: a CUDA GPU that supports it, or a CPU with AVX-512 BF16 or
AMX (where a 1024×576 @ 576×1536 product took 13 ms against 61 ms in float32). Elsewhere it is emulated: on an
AVX2-only CPU a SmolLM2-135M prefill of 32×40 tokens took 25–34 s under autocast against 3.5 s in float32.
``"auto"`` therefore picks bf16 only on such hardware.
"""

from __future__ import annotations

import contextlib

import torch

from agentlightning_rl.config import Precision

__all__ = ["autocast", "autocast_dtype", "native_bf16"]


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 products natively (so bf16 autocast is faster than float32)."""
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        # Private probes, present since torch 2.3; without them, assume emulation.
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(torch.cpu, probe, lambda: False)()) for probe in probes)
    return False


def autocast_dtype(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``precision`` means on ``device``: ``torch.bfloat16``, or ``None`` for float32."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def autocast(dtype: torch.dtype | None, device: torch.device) -> contextlib.AbstractContextManager[object]:
    """``torch.autocast`` on ``device`` in ``dtype``; nothing when ``dtype`` is ``None``."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
