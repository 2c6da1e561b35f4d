"""Where the policy lives, and how the engine serves each update: the two shapes of the torch backend.

- :class:`SharedWeights` (a ``TransformersEngine``): the engine serves the very module being trained. A step runs
  inside ``engine.paused()`` and the next request already sees the new weights; nothing is copied.
- :class:`ReloadedWeights` (a ``VLLMEngine``, or any engine with ``url``, ``model_name`` and
  ``load_weights(folder)``): this process trains its own copy of the served model, loaded from the same folder,
  and after every step saves it (safetensors) and has the engine reload it in place.

With LoRA, :meth:`serve_adapters` names the model each adapter is served under. The shared module's engine
serves them from the module itself (``TransformersEngine.serve_adapters``); an engine that reloads gets each
adapter saved after every step (PEFT's format, a new folder per step) and loads it (``VLLMEngine.load_lora``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("agentlightning_rl")

__all__ = ["ReloadedWeights", "SharedWeights", "backend_for"]


class SharedWeights:
    """The engine serves the module being trained (``TransformersEngine``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.model = engine.model
        self.tokenizer = engine.tokenizer
        # The engine's own setting, given back by close() (an engine without the setting is left alone).
        self._engine_autocast: torch.dtype | None = getattr(engine, "autocast_dtype", None)

    def generate_in(self, dtype: torch.dtype | None) -> None:
        """Have the engine generate under autocast in ``dtype`` (``None``: the weights' dtype) until :meth:`close`,
        so that the behaviour logprobs come from the arithmetic the step trains in."""
        if hasattr(self.engine, "autocast_dtype"):
            self.engine.autocast_dtype = dtype

    @contextlib.contextmanager
    def served(self) -> Iterator[str]:
        """The engine's OpenAI base URL, served on 127.0.0.1 for the run."""
        server = self.engine.serve(port=0)
        try:
            yield server.url
        finally:
            server.stop()

    def updating(self) -> contextlib.AbstractContextManager[Any]:
        """Hold generation between two decoding steps while the weights change."""
        return self.engine.paused()  # type: ignore[no-any-return]

    def serve_adapters(self, policy: Any, adapters: Mapping[str, str]) -> None:
        """Serve the LoRA adapters of ``policy`` (the peft model around the engine's module): model name ->
        adapter. The engine reads their weights in place, so every step is served at once."""
        self.engine.serve_adapters(policy, adapters)

    def publish(self, policy: Any) -> None:
        """Nothing to do: the engine already serves the updated module."""

    def close(self) -> None:
        """Give the engine back its own autocast setting."""
        if hasattr(self.engine, "autocast_dtype"):
            self.engine.autocast_dtype = self._engine_autocast


class ReloadedWeights:
    """This process trains a copy; the engine reloads it after each step (``VLLMEngine``)."""

    def __init__(self, engine: Any, policy: str | os.PathLike[str], device: str | torch.device | None = None) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.engine = engine
        folder = Path(policy)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model: Any = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        torch.nn.Module.to(self.model, device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self._staging = Path(tempfile.mkdtemp(prefix="agentlightning-weights-"))
        self._adapters: dict[str, str] = {}
        self._published = 0

    @contextlib.contextmanager
    def served(self) -> Iterator[str]:
        """The engine's OpenAI base URL (the engine was started by the caller)."""
        yield self.engine.url

    def generate_in(self, dtype: torch.dtype | None) -> None:
        """Nothing to do: the server generates in the dtype it was started with."""

    def updating(self) -> contextlib.AbstractContextManager[Any]:
        """Generation goes on with the old weights while the copy changes."""
        return contextlib.nullcontext()

    def serve_adapters(self, policy: Any, adapters: Mapping[str, str]) -> None:
        """Serve the LoRA adapters of ``policy`` (the peft model around this copy) under their model names
        (model name -> adapter), now and after every step.

        Raises:
            ValueError: the engine was started without LoRA, or with a smaller maximum rank than the adapters'.
        """
        if not getattr(self.engine, "enable_lora", False):
            raise ValueError(
                f"LoRA training behind {type(self.engine).__name__} needs the server to load adapters: start it "
                "with enable_lora=True (VLLMEngine(..., enable_lora=True, max_lora_rank=<at least the rank>))."
            )
        rank = max(config.r for config in policy.peft_config.values())
        limit = getattr(self.engine, "max_lora_rank", None)
        if limit is not None and rank > limit:
            raise ValueError(
                f"The adapters have rank {rank}, but the server takes at most rank {limit}: start it with "
                f"max_lora_rank={rank} or more, or lower LoraSettings.rank."
            )
        self._adapters = dict(adapters)
        self.publish(policy)

    def publish(self, policy: Any) -> None:
        """Have the engine serve the updated copy: its adapters when it has any (saved to a new folder each time,
        which vLLM's prefix cache keys on), else all its weights, reloaded in place."""
        if not self._adapters:
            policy.save_pretrained(self._staging, safe_serialization=True)
            self.engine.load_weights(self._staging)
            return
        self._published += 1
        folder = self._staging / f"adapters-{self._published}"
        # PEFT writes each adapter but "default" into a subfolder named after it.
        policy.save_pretrained(folder, selected_adapters=sorted(set(self._adapters.values())))
        for name, adapter in self._adapters.items():
            self.engine.load_lora(name, folder if adapter == "default" else folder / adapter)
        shutil.rmtree(self._staging / f"adapters-{self._published - 1}", ignore_errors=True)

    @property
    def adapters_folder(self) -> Path | None:
        """The folder of the adapters the server serves now (one subfolder per adapter), if any. vLLM reads an
        adapter's files when it needs them, so this folder outlives the run: the server goes on serving them."""
        return self._staging / f"adapters-{self._published}" if self._adapters else None

    def close(self) -> None:
        """Remove the staging folder, but for the adapters the server still serves (:attr:`adapters_folder`)."""
        keep = self.adapters_folder
        if keep is None:
            shutil.rmtree(self._staging, ignore_errors=True)
            return
        for path in self._staging.iterdir():
            if path == keep:
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        log.info("The trained LoRA adapters the server serves are in %s", keep)


def backend_for(engine: Any, policy: str | os.PathLike[str] | None) -> SharedWeights | ReloadedWeights:
    """The backend shape ``engine`` calls for.

    Raises:
        TypeError: the engine is neither kind.
    """
    if hasattr(engine, "paused") and hasattr(engine, "model") and hasattr(engine, "serve"):
        return SharedWeights(engine)
    if hasattr(engine, "load_weights") and hasattr(engine, "url"):
        folder = policy if policy is not None else getattr(engine, "model_folder", None)
        if folder is None:
            raise TypeError(
                f"LightningRL trains a copy of the model {type(engine).__name__} serves: pass policy= the Hugging Face "
                "folder of that model."
            )
        return ReloadedWeights(engine, folder)
    raise TypeError(
        f"LightningRL trains with a TransformersEngine (which serves the trained module itself) or an engine that "
        f"reloads weights (VLLMEngine); got {type(engine).__name__}."
    )
