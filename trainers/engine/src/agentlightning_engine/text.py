"""The text of one choice as its tokens arrive: stop strings, and how much of it may be streamed yet.

One rule holds throughout: the text of a choice is ``tokenizer.decode(token_ids, skip_special_tokens=True)``,
so a gateway can check that the token ids it records are the text the agent got. (The EOS or stop token that
ends a choice is the last of its ``token_ids``, as in vLLM, and adds no text: EOS is a special token, and a
stop token named in ``stop_token_ids`` is left out of the text whatever it is.) Two consequences:

- A stop string ends the choice at the last token boundary before it: tokens that complete (or contain
  the start of) the stop string are left out, together with any text they carry before the stop string
  (OpenAI would keep that part; it cannot be kept without breaking the rule).
- A stream holds back text that may be the start of a stop string (or of a ``<tool_call>`` block when
  tool calls are parsed), and an incomplete UTF-8 character, until it is known; so the streamed pieces
  add up to the final text and the streamed token ids to the final ``token_ids``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

__all__ = ["Detokenizer", "ChoiceText"]

_INCOMPLETE = "\ufffd"  # what decoding shows for the first bytes of a character split over tokens


class Detokenizer(Protocol):
    """What :class:`ChoiceText` needs of a tokenizer."""

    def decode(self, token_ids: list[int], *, skip_special_tokens: bool) -> str: ...


class ChoiceText:
    """Token ids and text of one choice, cut at stop strings; tracks what was streamed so far."""

    def __init__(self, tokenizer: Detokenizer, stop: Sequence[str] = (), hold: Sequence[str] = ()) -> None:
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        #: Markers after which text is held back until the end (e.g. ``<tool_call>``): not stop strings.
        self._hold = tuple(hold)
        self._prefixes = tuple(s for s in (*self._stop, *self._hold) if s)
        self.token_ids: list[int] = []
        self.text = ""
        self.streamed_tokens = 0
        self.streamed_text = ""

    def _decode(self, count: int) -> str:
        return self._tokenizer.decode(self.token_ids[:count], skip_special_tokens=True)

    def add(self, token_id: int) -> bool:
        """Append a generated token; returns True when a stop string ended the choice (the ids are then cut)."""
        self.token_ids.append(token_id)
        self.text = self._decode(len(self.token_ids))
        if not self._stop:
            return False
        found = [i for i in (self.text.find(s) for s in self._stop) if i >= 0]
        if not found:
            return False
        cut = min(found)
        keep = len(self.token_ids) - 1
        while keep > 0 and not self.text[:cut].startswith(self._decode(keep)):
            keep -= 1
        del self.token_ids[keep:]
        self.text = self._decode(keep)
        return True

    def add_stop_token(self, token_id: int) -> None:
        """Append the EOS / stop token that ends the choice: kept in the token ids, adding no text."""
        self.token_ids.append(token_id)

    def _held_length(self) -> int:
        """How much of the end of the text might still turn into a stop string or a hold marker."""
        held = 0
        for marker in self._hold:
            at = self.text.find(marker)
            if at >= 0:
                held = max(held, len(self.text) - at)
        for prefix in self._prefixes:
            for size in range(min(len(prefix) - 1, len(self.text)), held, -1):
                if self.text.endswith(prefix[:size]):
                    held = size
                    break
        return held

    def take_streamable(self) -> tuple[list[int], str]:
        """The tokens (and their text) that can be streamed now, and marks them streamed."""
        limit = len(self.text) - self._held_length()
        if limit <= len(self.streamed_text):
            return [], ""
        for count in range(len(self.token_ids), self.streamed_tokens, -1):
            text = self.text if count == len(self.token_ids) else self._decode(count)
            if len(text) <= limit and text.startswith(self.streamed_text) and not text.endswith(_INCOMPLETE):
                return self._mark_streamed(count, text)
        return [], ""

    def take_rest(self) -> tuple[list[int], str]:
        """Everything not streamed yet (at the end of the choice)."""
        return self._mark_streamed(len(self.token_ids), self.text)

    def _mark_streamed(self, count: int, text: str) -> tuple[list[int], str]:
        ids = self.token_ids[self.streamed_tokens : count]
        delta = text[len(self.streamed_text) :] if text.startswith(self.streamed_text) else ""
        self.streamed_tokens = count
        self.streamed_text = text
        return ids, delta
