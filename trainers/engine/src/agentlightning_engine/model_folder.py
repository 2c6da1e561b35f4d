"""A Hugging Face model folder for servers that cannot read GGUF files (vLLM): a GGUF model is converted once.

The converted folder is cached under ``cache_dir`` (default ``$AGL_MODEL_CACHE``, else
``~/.cache/agentlightning/models``), keyed by the GGUF file's path, size and modification time, and written to
a temporary folder that is renamed into place when complete, so concurrent callers never see half a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

from agentlightning_engine.errors import EngineError
from agentlightning_engine.model_source import ModelSource, resolve_model

__all__ = ["hf_model_folder", "default_cache_dir"]

log = logging.getLogger("agentlightning_engine")


def default_cache_dir() -> Path:
    """Where converted models are kept: ``$AGL_MODEL_CACHE``, else ``$XDG_CACHE_HOME`` or ``~/.cache``, plus
    ``agentlightning/models``."""
    configured = os.environ.get("AGL_MODEL_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "agentlightning" / "models"


def hf_model_folder(model: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The Hugging Face folder (``config.json``, weights, tokenizer) of ``model``: a known name, a folder, or a
    ``.gguf`` file (see :func:`~agentlightning_engine.model_source.resolve_model`). A GGUF model is dequantized
    and saved with ``save_pretrained`` the first time, then taken from the cache."""
    source = resolve_model(model)
    if source.gguf_file is None:
        return source.directory
    gguf = (source.directory / source.gguf_file).resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=root))
    except OSError as exc:
        raise EngineError(
            f"Cannot write the converted model for {model!r} under {root}: {exc}. "
            "Pass cache_dir= (or set AGL_MODEL_CACHE) to a writable folder."
        ) from exc
    try:
        started = time.perf_counter()
        _convert(source, scratch)
        try:
            scratch.rename(target)  # atomic; fails if another process finished first, which is as good
        except OSError:
            if not (target / "config.json").is_file():
                raise
        log.info("Converted %s to %s in %.1f s", gguf, target, time.perf_counter() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(source: ModelSource, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.directory, gguf_file=source.gguf_file)
    dequantized = AutoModelForCausalLM.from_pretrained(source.directory, gguf_file=source.gguf_file)
    # transformers marks a model loaded from GGUF as quantized and refuses to save it, although its weights are
    # plain float32 by now: copy them into a model built from the same config without the GGUF marker.
    config = dequantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    model.load_state_dict(dequantized.state_dict())
    model.generation_config = dequantized.generation_config
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
