"""Sequences that share a prefix, packed as a prefix tree: every distinct prefix token runs through the model once.

The sequences of a training micro-batch share a lot: a group's samples send the same prompt, every prompt starts
with the same system message and tool list, an agent's second call repeats its first call's prompt and
completion. :func:`pack_prefix_trees` merges the sequences (token ids) into a trie, lays each trie out as one row
(a node's tokens after its parent's) and gives every node the context it would have in its own sequence::

    node n attends to: n's ancestors and n itself            (the tree's attention mask)
    position of n:      its depth (its index in any sequence through it)

so the hidden state of every node equals the one a separate pass over any sequence through it would give, and
the logprob of token ``j`` of a sequence is read from the node of token ``j-1``. The sum over the sequences
through a node of their losses' gradients flows back into that one node, which is exactly the gradient of
separate passes. The cost is one pass over ``T`` distinct tokens instead of every sequence's length.

A row holds at most ``max_row_tokens`` nodes (its ``T × T`` mask must fit in memory): the sequences are
added in order, and one that would make the current row longer starts a new one (a sequence longer than the
bound gets a row of its own). Only models whose attention takes a ready 4D mask can run this (``sdpa`` and
``eager`` attention in transformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["PackedTrees", "pack_prefix_trees"]


@dataclass(frozen=True)
class PackedTrees:
    """Rows of prefix trees, right-padded to the longest."""

    #: ``[R, T]`` each node's token id (padding: 0).
    input_ids: torch.Tensor
    #: ``[R, T]`` each node's depth (padding: 0).
    positions: torch.Tensor
    #: ``[R, T, T]`` True where a node (query) may attend to a node (key): its ancestors and itself. A padding
    #: position attends to itself only, so no softmax row is empty.
    allowed: torch.Tensor
    #: ``[N]`` for each completion token, in sequence order then token order, the flat index into ``R × T`` of
    #: the node that predicts it (the node of the token before it).
    predictors: torch.Tensor
    #: ``[N]`` the completion tokens, in the same order.
    targets: torch.Tensor
    #: Distinct prefix tokens (tree nodes) over all rows: the positions that run through the model, padding aside.
    nodes: int


def pack_prefix_trees(
    sequences: Sequence[Sequence[int]],
    completion_starts: Sequence[int],
    *,
    max_row_tokens: int = 4096,
    device: torch.device | str = "cpu",
) -> PackedTrees:
    """Pack ``sequences`` (each prompt + completion token ids; its completion starts at ``completion_starts[i]``,
    at least 1) into prefix-tree rows of at most ``max_row_tokens`` nodes (module docstring)."""
    if len(sequences) != len(completion_starts):
        raise ValueError(f"{len(sequences)} sequences but {len(completion_starts)} completion starts.")
    rows: list[_Trie] = []
    paths: list[tuple[int, list[int]]] = []  # per sequence: its row and the node of each of its tokens
    for tokens, start in zip(sequences, completion_starts, strict=True):
        if not 1 <= start <= len(tokens):
            raise ValueError(
                f"A completion starts at {start} in a sequence of {len(tokens)} tokens: nothing predicts it."
            )
        if not rows or (rows[-1].size + rows[-1].missing(tokens) > max_row_tokens and rows[-1].size > 0):
            rows.append(_Trie())
        paths.append((len(rows) - 1, rows[-1].add(tokens)))
    width = max(trie.size for trie in rows)
    input_ids = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    allowed = torch.zeros((len(rows), width, width), dtype=torch.bool)
    for r, trie in enumerate(rows):
        input_ids[r, : trie.size] = torch.tensor(trie.tokens, dtype=torch.long)
        positions[r, : trie.size] = torch.tensor(trie.depths, dtype=torch.long)
        padding = torch.arange(trie.size, width)
        allowed[r, padding, padding] = True
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    predictors: list[int] = []
    targets: list[int] = []
    for (r, nodes), tokens, start in zip(paths, sequences, completion_starts, strict=True):
        # Every node attends to the nodes before it on its path; sequences through a node agree on its path.
        path = torch.tensor(nodes, dtype=torch.long)
        allowed[r, path[:, None], path[None, :]] |= causal[: len(nodes), : len(nodes)]
        predictors += [r * width + node for node in nodes[start - 1 : len(tokens) - 1]]
        targets += tokens[start:]
    return PackedTrees(
        input_ids.to(device),
        positions.to(device),
        allowed.to(device),
        torch.tensor(predictors, dtype=torch.long, device=device),
        torch.tensor(targets, dtype=torch.long, device=device),
        sum(trie.size for trie in rows),
    )


class _Trie:
    """Nodes in the order they were made (a parent before its children), each with its token and depth."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.depths: list[int] = []
        self._children: dict[tuple[int, int], int] = {}  # (parent node or -1, token) -> node

    @property
    def size(self) -> int:
        return len(self.tokens)

    def missing(self, tokens: Sequence[int]) -> int:
        """How many nodes adding ``tokens`` would make."""
        node = -1
        for depth, token in enumerate(tokens):
            child = self._children.get((node, token))
            if child is None:
                return len(tokens) - depth
            node = child
        return 0

    def add(self, tokens: Sequence[int]) -> list[int]:
        """The node of each token of ``tokens``, made where missing."""
        nodes = []
        node = -1
        for depth, token in enumerate(tokens):
            child = self._children.get((node, token))
            if child is None:
                child = len(self.tokens)
                self._children[(node, token)] = child
                self.tokens.append(token)
                self.depths.append(depth)
            nodes.append(child)
            node = child
        return nodes
