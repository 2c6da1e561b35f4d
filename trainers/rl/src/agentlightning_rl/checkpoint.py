"""Resumable checkpoints of a LightningRL run.

A checkpoint is one folder (``<checkpoint_dir>/latest``), replaced whole each time (written next to it, then
renamed), so an interrupted save never leaves a half checkpoint:

- ``weights.safetensors``: the trained parameters (every weight, or only the LoRA adapters');
- ``optimizer.pt``: the optimizer's state (AdamW moments);
- ``state.json``: the iteration reached, the task order and position, the records so far, the RNG states.
"""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agentlightning import AgentLightningError
from agentlightning_rl.metrics import IterationRecord, ValidationRecord

__all__ = ["CheckpointError", "TrainingState", "load_checkpoint", "save_checkpoint"]

LATEST = "latest"


class CheckpointError(AgentLightningError):
    """A checkpoint cannot be resumed (missing files, or weights of another model)."""


@dataclass
class TrainingState:
    """Where a run stands: what a resumed run needs besides the weights and the optimizer."""

    #: Iterations completed.
    iteration: int = 0
    #: The current pass's task order (indices into the training set), and how many of them were used.
    order: list[int] = field(default_factory=list)
    position: int = 0
    history: list[IterationRecord] = field(default_factory=list)
    validations: list[ValidationRecord] = field(default_factory=list)
    #: ``random.Random.getstate()`` of the task shuffler.
    shuffler_state: Any = None


def _trained_parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # named_parameters lists a tied weight once, so the embedding shared with lm_head is saved once.
    lora = [name for name, _ in model.named_parameters() if "lora_" in name]
    names = set(lora) if lora else {name for name, _ in model.named_parameters()}
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if name in names}


def save_checkpoint(
    folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainingState
) -> Path:
    """Write the checkpoint into ``folder/latest`` (replacing the previous one); returns that folder."""
    from safetensors.torch import save_file

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    target = root / LATEST
    staging = root / f".{LATEST}.writing"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    save_file(_trained_parameters(model), str(staging / "weights.safetensors"))
    torch.save(optimizer.state_dict(), staging / "optimizer.pt")
    payload = {
        "iteration": state.iteration,
        "order": state.order,
        "position": state.position,
        "history": [dataclasses.asdict(r) for r in state.history],
        "validations": [dataclasses.asdict(v) for v in state.validations],
        "shuffler_state": state.shuffler_state,
        "torch_rng_state": torch.get_rng_state().tolist(),
    }
    (staging / "state.json").write_text(json.dumps(payload))
    previous = root / f".{LATEST}.previous"
    if target.exists():
        if previous.exists():
            shutil.rmtree(previous)
        target.rename(previous)
    staging.rename(target)
    if previous.exists():
        shutil.rmtree(previous)
    return target


def load_checkpoint(
    folder: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> TrainingState | None:
    """Load ``folder/latest`` into ``model`` and ``optimizer``; ``None`` when there is no checkpoint yet.

    Raises:
        CheckpointError: the checkpoint is incomplete or its weights do not fit ``model``.
    """
    from safetensors.torch import load_file

    source = Path(folder) / LATEST
    if not source.exists():
        return None
    files = [source / name for name in ("weights.safetensors", "optimizer.pt", "state.json")]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(f"The checkpoint {source} lacks {', '.join(missing)}; delete it to start afresh.")
    weights = load_file(str(files[0]))
    expected = _trained_parameters(model)
    if set(weights) != set(expected):
        unknown = sorted(set(weights) - set(expected))[:3]
        absent = sorted(set(expected) - set(weights))[:3]
        raise CheckpointError(
            f"The checkpoint {source} holds other weights than this model trains (unknown: {unknown}, missing: "
            f"{absent}). Was it written with another model or other LoRA settings? Use another checkpoint folder."
        )
    with torch.no_grad():
        parameters = dict(model.named_parameters())
        for name, value in weights.items():
            if parameters[name].shape != value.shape:
                raise CheckpointError(
                    f"The checkpoint {source} has {name} of shape {tuple(value.shape)}, the model "
                    f"{tuple(parameters[name].shape)}; it belongs to another model."
                )
            parameters[name].copy_(value)
    optimizer.load_state_dict(torch.load(files[1], weights_only=True))
    payload = json.loads(files[2].read_text())
    torch.set_rng_state(torch.tensor(payload["torch_rng_state"], dtype=torch.uint8))
    shuffler = payload["shuffler_state"]
    return TrainingState(
        iteration=payload["iteration"],
        order=payload["order"],
        position=payload["position"],
        history=[IterationRecord(**r) for r in payload["history"]],
        validations=[ValidationRecord(**v) for v in payload["validations"]],
        shuffler_state=_as_tuples(shuffler) if shuffler is not None else None,
    )


def _as_tuples(value: Any) -> Any:
    """JSON gave lists where ``random.Random.setstate`` wants tuples."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def new_shuffler(seed: int, state: Any = None) -> random.Random:
    """The task shuffler: seeded, or restored from a checkpoint's state."""
    shuffler = random.Random(seed)
    if state is not None:
        shuffler.setstate(state)
    return shuffler
