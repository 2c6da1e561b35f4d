"""The engine's cache layers keep room to grow, and hold exactly what transformers' DynamicLayer would."""

from __future__ import annotations

import torch
from agentlightning_engine.generation import CACHE_ROOM, _new_cache
from transformers import DynamicCache


def test_appending_dropping_rows_and_growing_past_the_room_match_a_plain_dynamic_cache() -> None:
    generator = torch.Generator().manual_seed(0)
    ours, plain = _new_cache(), DynamicCache()

    def append(rows: int, length: int) -> None:
        keys = torch.randn(rows, 2, length, 8, generator=generator)
        values = torch.randn(rows, 2, length, 8, generator=generator)
        got = ours.update(keys, values, 0)
        want = plain.update(keys, values, 0)
        torch.testing.assert_close(got, want, rtol=0, atol=0)

    append(4, 5)  # a prefill
    assert type(ours.layers[0]).__name__ == "RoomyLayer"
    buffer = ours.layers[0]._key_buffer
    for _ in range(3):  # decoding steps write into the room: no new buffer
        append(4, 1)
    assert ours.layers[0]._key_buffer is buffer
    # Rows that finished are dropped from outside; the next append copies what is left, once.
    for cache in (ours, plain):
        cache.batch_select_indices(torch.tensor([0, 2]))
    append(2, 1)
    append(2, CACHE_ROOM + 3)  # more than the room left: a larger buffer
    assert ours.get_seq_length() == plain.get_seq_length() == 5 + 3 + 1 + CACHE_ROOM + 3
    torch.testing.assert_close(ours.layers[0].values, plain.layers[0].values, rtol=0, atol=0)
