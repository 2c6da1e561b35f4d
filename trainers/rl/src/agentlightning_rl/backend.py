"""Where the policy lives, and how the engine serves each update: the two shapes of the torch backend.

- :class:`SharedWeights` (a ``TransformersEngine``): the engine serves the very module being trained. A step runs
  inside ``engine.paused()`` and the next request already sees the new weights; nothing is copied.
- :class:`ReloadedWeights` (a ``VLLMEngine``, or any engine with ``url``, ``model_name`` and
  ``load_weights(folder)``): this process trains its own copy of the served model, loaded from the same folder,
  and after every step saves it (safetensors) and has the engine reload it in place.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["ReloadedWeights", "SharedWeights", "backend_for"]


class SharedWeights:
    """The engine serves the module being trained (``TransformersEngine``)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.model = engine.model
        self.tokenizer = engine.tokenizer

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

    def publish(self, policy: Any) -> None:
        """Nothing to do: the engine already serves the updated module."""

    def close(self) -> None:
        """Nothing to release."""


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

    @contextlib.contextmanager
    def served(self) -> Iterator[str]:
        """The engine's OpenAI base URL (the engine was started by the caller)."""
        yield self.engine.url

    def updating(self) -> contextlib.AbstractContextManager[Any]:
        """Generation goes on with the old weights while the copy changes."""
        return contextlib.nullcontext()

    def publish(self, policy: Any) -> None:
        """Save the updated copy and have the engine reload it in place."""
        policy.save_pretrained(self._staging, safe_serialization=True)
        self.engine.load_weights(self._staging)

    def close(self) -> None:
        """Remove the staging folder."""
        shutil.rmtree(self._staging, ignore_errors=True)


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
