# The formulas are written in their papers' notation (Greek letters, ×, ℓ).
"""From samples (a call and its advantage) to padded training micro-batches.

Each call becomes one sequence: ``input_ids = prompt_token_ids + completion_token_ids`` (the exact tokens the
engine saw and produced, never re-tokenized text), right-padded, with a mask of the completion positions and
the engine's logprob of each completion token (the behaviour policy of the importance ratio).

**Aggregation weights.** The loss of a step is ``L = Σ_tokens w_k · ℓ_k`` over every completion token of the
step. The weights come from the whole step, not from one micro-batch, so summing the micro-batches' losses
(gradient accumulation) gives exactly the loss, and gradient, of one big batch::

    "token":    w_k = 1 / N                  N: completion tokens of the step (DAPO, Yu et al. 2025)
    "sequence": w_k = 1 / (S · n_s)          S: sequences (calls) of the step, n_s: tokens of k's call (GRPO)
    "rollout":  w_k = 1 / (R · n_r)          R: rollouts of the step, n_r: tokens of all k's rollout's calls

**Micro-batches** hold the calls of one agent only (so that one LoRA adapter serves a whole pass), at most
``micro_batch_size`` sequences and at most ``micro_batch_tokens`` padded tokens (sequences × longest), so
memory stays bounded whatever the step's size. Calls are packed longest first to waste little padding; a
call longer than the token budget forms a micro-batch of its own.

**Shared prompts** (``share_prompts``): calls with identical prompt token ids (the ``group_size`` samples of a
task's first call) are packed together, and the micro-batch holds each distinct prompt once
(:class:`SharedPrompts`) next to the completions, which the logprobs run on top of the prompt's cache
(:func:`~agentlightning_rl.logprobs.shared_prompt_logprobs`). The padded token count is then
``P × longest prompt + B × longest completion``. Only packs where a prompt repeats use the shared layout.

**Prefix trees** (``prefix_trees``, which LightningRL sets where the model's attention takes a 4D mask): the calls
are packed in the order of their token ids, so calls sharing a prefix are neighbours (a group's samples, an
agent's call and its next call, whose prompt holds the first), and a pack's token cost is its distinct prefix
tokens (:mod:`agentlightning_rl.prefix_tree`); rows keep the plain layout, and the logprobs run them as trees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from agentlightning import AgentLightningError
from agentlightning.types import Transition
from agentlightning_rl.advantages import Sample
from agentlightning_rl.config import LossAggregation

__all__ = ["InvalidLogprobs", "MicroBatch", "SharedPrompts", "make_micro_batches"]


class InvalidLogprobs(AgentLightningError):
    """A call has no recorded logprobs, or not one per completion token: it cannot be importance-weighted."""

    def __init__(self, transition: Transition, problem: str) -> None:
        self.span_id = transition.span_id
        who = f" of agent {transition.agent_name!r}" if transition.agent_name else ""
        super().__init__(
            f"LLM call {transition.span_id}{who} (model {transition.model!r}) {problem}. LightningRL needs the "
            "engine's logprob of every completion token as the behaviour policy of its importance ratio. Serve the "
            "model with agentlightning-engine or vLLM behind agl.Gateway, which asks the engine for logprobs."
        )


@dataclass(frozen=True)
class SharedPrompts:
    """The distinct prompts of a micro-batch whose rows are completions only."""

    #: ``[P, Lp]`` prompt token ids, left-padded (every prompt ends at the last column).
    input_ids: torch.Tensor
    #: ``[P, Lp]`` 1 on real tokens, 0 on padding.
    attention_mask: torch.Tensor
    #: ``[B]`` the prompt of each completion row.
    row_prompt: torch.Tensor

    def to(self, device: torch.device | str) -> SharedPrompts:
        """The same prompts on ``device``."""
        return SharedPrompts(self.input_ids.to(device), self.attention_mask.to(device), self.row_prompt.to(device))


@dataclass(frozen=True)
class MicroBatch:
    """Padded sequences for one forward/backward pass. ``B`` sequences of width ``L``; ``N`` completion tokens.

    Per-token tensors (``behaviour_logprobs``, ``advantages``, ``weights``) list the completion tokens in the
    row-major order of ``completion_mask``, i.e. ``tensor[completion_mask]`` order.
    """

    #: ``[B, L]`` prompt + completion token ids, right-padded.
    input_ids: torch.Tensor
    #: ``[B, L]`` 1 on real tokens, 0 on padding.
    attention_mask: torch.Tensor
    #: ``[B, L]`` True on the completion tokens (the tokens trained on).
    completion_mask: torch.Tensor
    #: ``[N]`` the engine's logprob of each completion token.
    behaviour_logprobs: torch.Tensor
    #: ``[N]`` the advantage of each completion token (its call's).
    advantages: torch.Tensor
    #: ``[N]`` the aggregation weight of each completion token (module docstring).
    weights: torch.Tensor
    #: The agent whose calls these are (one adapter per pass).
    agent_name: str | None
    #: When set, ``input_ids`` / ``attention_mask`` / ``completion_mask`` hold the completions only (``[B, Lc]``,
    #: every real token a completion token) and these are their prompts.
    shared_prompts: SharedPrompts | None = None
    #: Run the rows as prefix trees (:mod:`agentlightning_rl.prefix_tree`): every distinct prefix token once.
    prefix_trees: bool = False

    @property
    def num_sequences(self) -> int:
        """``B``."""
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        """``N``, the completion tokens trained on."""
        return int(self.behaviour_logprobs.shape[0])

    def to(self, device: torch.device | str) -> MicroBatch:
        """The same micro-batch on ``device``."""
        return MicroBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.completion_mask.to(device),
            self.behaviour_logprobs.to(device),
            self.advantages.to(device),
            self.weights.to(device),
            self.agent_name,
            self.shared_prompts.to(device) if self.shared_prompts is not None else None,
            self.prefix_trees,
        )


@dataclass(frozen=True)
class _Row:
    prompt: list[int]
    completion: list[int]
    logprobs: list[float]
    advantage: float
    weight: float
    agent_name: str | None

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.completion)


def make_micro_batches(
    samples: Sequence[Sample],
    aggregation: LossAggregation,
    *,
    micro_batch_size: int,
    micro_batch_tokens: int | None,
    pad_token_id: int = 0,
    share_prompts: bool = False,
    prefix_trees: bool = False,
) -> list[MicroBatch]:
    """The micro-batches of one optimizer step over ``samples`` (module docstring); with ``share_prompts``,
    the calls of one prompt share its pass; with ``prefix_trees`` (which takes precedence), every distinct prefix
    token of a micro-batch runs once.

    Calls with no completion tokens have nothing to learn from and are left out.

    Raises:
        agentlightning.MissingTokenIds: a call has no recorded token ids.
        ValueError: a call has an empty prompt.
        InvalidLogprobs: a call has no logprobs, or not one per completion token.
    """
    checked: list[tuple[Sample, list[int], list[int], list[float]]] = []
    for sample in samples:
        transition = sample.transition
        prompt, completion = transition.token_ids()
        if not prompt:
            raise ValueError(
                f"LLM call {transition.span_id} has no prompt tokens: nothing predicts its first completion token."
            )
        if transition.logprobs is None:
            raise InvalidLogprobs(transition, "has no recorded logprobs")
        if len(transition.logprobs) != len(completion):
            raise InvalidLogprobs(
                transition, f"has {len(transition.logprobs)} logprobs for {len(completion)} completion tokens"
            )
        if completion:
            checked.append((sample, prompt, completion, transition.logprobs))
    if not checked:
        return []

    weights = _weights([(s.rollout_id, len(c)) for s, _, c, _ in checked], aggregation)
    rows = [
        _Row(prompt, completion, logprobs, sample.advantage, weight, sample.transition.agent_name)
        for (sample, prompt, completion, logprobs), weight in zip(checked, weights, strict=True)
    ]
    if prefix_trees:
        return _pack_trees(rows, micro_batch_size, micro_batch_tokens, pad_token_id)
    if share_prompts:
        return _pack_shared(rows, micro_batch_size, micro_batch_tokens, pad_token_id)
    # One agent per micro-batch; longest first within an agent so each pack's width is set by its first row.
    rows.sort(key=lambda row: (row.agent_name is not None, row.agent_name or "", -row.length))
    packs: list[list[_Row]] = []
    for row in rows:
        current = packs[-1] if packs else None
        if (
            current is not None
            and current[0].agent_name == row.agent_name
            and len(current) < micro_batch_size
            and (micro_batch_tokens is None or (len(current) + 1) * current[0].length <= micro_batch_tokens)
        ):
            current.append(row)
        else:
            packs.append([row])
    return [_collate(pack, pad_token_id) for pack in packs]


def _pack_shared(
    rows: list[_Row], micro_batch_size: int, micro_batch_tokens: int | None, pad_token_id: int
) -> list[MicroBatch]:
    """Packs of one agent's calls where the calls of one prompt stay together (split only when they alone exceed
    a bound); the padded cost of a pack is ``P × longest prompt + B × longest completion``."""
    by_prompt: dict[tuple[str | None, tuple[int, ...]], list[_Row]] = {}
    for row in rows:
        by_prompt.setdefault((row.agent_name, tuple(row.prompt)), []).append(row)
    # Agent, then longest prompt first, so that a pack's prompt width is set by its first group.
    groups = sorted(
        by_prompt.values(), key=lambda g: (g[0].agent_name is not None, g[0].agent_name or "", -len(g[0].prompt))
    )
    packs: list[list[list[_Row]]] = []  # pack -> its prompt groups -> rows

    def cost(pack: list[list[_Row]]) -> int:
        prompts = len(pack) * max(len(g[0].prompt) for g in pack)
        return prompts + sum(len(g) for g in pack) * max(len(r.completion) for g in pack for r in g)

    for group in groups:
        for start in range(0, len(group), micro_batch_size):
            part = group[start : start + micro_batch_size]
            current = packs[-1] if packs else None
            if (
                current is not None
                and current[0][0].agent_name == part[0].agent_name
                and sum(len(g) for g in current) + len(part) <= micro_batch_size
                and (micro_batch_tokens is None or cost([*current, part]) <= micro_batch_tokens)
            ):
                current.append(part)
            else:
                packs.append([part])
    return [
        _collate_shared(pack, pad_token_id)
        if any(len(g) > 1 for g in pack)
        else _collate([g[0] for g in pack], pad_token_id)
        for pack in packs
    ]


def _pack_trees(
    rows: list[_Row], micro_batch_size: int, micro_batch_tokens: int | None, pad_token_id: int
) -> list[MicroBatch]:
    """Packs of one agent's calls in the order of their token ids: sorted so, calls that share a prefix are
    neighbours (a depth-first walk of their trie: a group's samples, an agent's call and its next call), and a
    pack's cost is its distinct prefix tokens, each call's length less what it shares with the call before."""
    rows = sorted(rows, key=lambda r: (r.agent_name is not None, r.agent_name or "", r.prompt + r.completion))
    packs: list[list[_Row]] = []
    cost = 0
    previous: list[int] = []
    for row in rows:
        tokens = row.prompt + row.completion
        current = packs[-1] if packs else None
        same_agent = current is not None and current[0].agent_name == row.agent_name
        added = len(tokens) - (_common_prefix(previous, tokens) if same_agent else 0)
        if (
            current is not None
            and same_agent
            and len(current) < micro_batch_size
            and (micro_batch_tokens is None or cost + added <= micro_batch_tokens)
        ):
            current.append(row)
            cost += added
        else:
            packs.append([row])
            cost = len(tokens)
        previous = tokens
    return [_collate(pack, pad_token_id, prefix_trees=True) for pack in packs]


def _common_prefix(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _weights(calls: list[tuple[str | None, int]], aggregation: LossAggregation) -> list[float]:
    """Each call's per-token weight, from (rollout id, completion tokens) of every call of the step."""
    if aggregation == "token":
        total = sum(tokens for _, tokens in calls)
        return [1.0 / total] * len(calls)
    if aggregation == "sequence":
        return [1.0 / (len(calls) * tokens) for _, tokens in calls]
    if aggregation == "rollout":
        # A call of no known rollout is a rollout of its own.
        keys = [rollout_id if rollout_id is not None else f"\0call-{i}" for i, (rollout_id, _) in enumerate(calls)]
        per_rollout: dict[str, int] = {}
        for key, (_, tokens) in zip(keys, calls, strict=True):
            per_rollout[key] = per_rollout.get(key, 0) + tokens
        return [1.0 / (len(per_rollout) * per_rollout[key]) for key in keys]
    raise ValueError(f"Unknown loss aggregation {aggregation!r}; use 'token', 'sequence' or 'rollout'.")


def _collate(pack: list[_Row], pad_token_id: int, *, prefix_trees: bool = False) -> MicroBatch:
    width = max(row.length for row in pack)
    input_ids = torch.full((len(pack), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pack), width), dtype=torch.long)
    completion_mask = torch.zeros((len(pack), width), dtype=torch.bool)
    for i, row in enumerate(pack):
        input_ids[i, : row.length] = torch.tensor(row.prompt + row.completion, dtype=torch.long)
        attention_mask[i, : row.length] = 1
        completion_mask[i, len(row.prompt) : row.length] = True
    return MicroBatch(
        input_ids,
        attention_mask,
        completion_mask,
        *_token_values(pack),
        agent_name=pack[0].agent_name,
        prefix_trees=prefix_trees,
    )


def _token_values(rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Behaviour logprobs, advantages and weights of every completion token, in the row-major order of the
    completion mask: row by row, each row's completion tokens in order."""
    logprobs: list[float] = []
    advantages: list[float] = []
    weights: list[float] = []
    for row in rows:
        logprobs += row.logprobs
        advantages += [row.advantage] * len(row.completion)
        weights += [row.weight] * len(row.completion)
    return tuple(torch.tensor(values, dtype=torch.float32) for values in (logprobs, advantages, weights))  # type: ignore[return-value]


def _collate_shared(pack: list[list[_Row]], pad_token_id: int) -> MicroBatch:
    rows = [row for group in pack for row in group]
    prompt_width = max(len(group[0].prompt) for group in pack)
    prompt_ids = torch.full((len(pack), prompt_width), pad_token_id, dtype=torch.long)
    prompt_mask = torch.zeros((len(pack), prompt_width), dtype=torch.long)
    for p, group in enumerate(pack):
        prompt = group[0].prompt
        prompt_ids[p, prompt_width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        prompt_mask[p, prompt_width - len(prompt) :] = 1
    width = max(len(row.completion) for row in rows)
    completion_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        completion_ids[i, : len(row.completion)] = torch.tensor(row.completion, dtype=torch.long)
        completion_mask[i, : len(row.completion)] = True
    row_prompt = torch.tensor([p for p, group in enumerate(pack) for _ in group], dtype=torch.long)
    return MicroBatch(
        completion_ids,
        completion_mask.long(),
        completion_mask,
        *_token_values(rows),
        agent_name=pack[0][0].agent_name,
        shared_prompts=SharedPrompts(prompt_ids, prompt_mask, row_prompt),
    )
