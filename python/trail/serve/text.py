"""A request's text as its tokens arrive: incremental detokenization with stop strings.

The text is the tokenizer's decoding of every generated token (special tokens skipped), so a
multi-token character or a word-piece join never shows half-formed: text that ends in an
incomplete UTF-8 sequence ("\\ufffd") is held back until the next token completes it, and so
is any tail that might be the start of a stop string. A stop string ends the text before it
(as vLLM and OpenAI do: the stop string itself is not returned).
"""

from __future__ import annotations

from typing import Any, Sequence


class TextStream:
    """The text of one request's generated tokens, released in safe pieces."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""          # the decoded text so far (up to a stop string, once found)
        self.sent = 0           # characters of `text` already released
        self.stopped = False    # a stop string was found: the text is final

    def push(self, ids: Sequence[int]) -> None:
        """Add newly generated tokens; finds a stop string if their text completes one."""
        if self.stopped or not ids:
            return
        self.ids.extend(int(t) for t in ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        # a stop string may straddle the old and new text: search from just before the end
        # of what was already decoded
        start = max(0, len(self.text) - max((len(s) for s in self.stop), default=0))
        cut = min((i for i in (text.find(s, start) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, self.stopped = text[:cut], True
        self.text = text

    def release(self, final: bool = False) -> str:
        """The text not released before that is safe to send now (all of it when `final`)."""
        end = len(self.text)
        if not final and not self.stopped:
            if self.text.endswith("\ufffd"):  # an incomplete multi-byte character
                end = len(self.text.rstrip("\ufffd"))
            end -= self._stop_prefix(self.text[:end])
        end = max(end, self.sent)
        piece = self.text[self.sent:end]
        self.sent = end
        return piece

    def _stop_prefix(self, text: str) -> int:
        """Length of the longest tail of `text` that begins some stop string."""
        best = 0
        for s in self.stop:
            for k in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:k]):
                    best = k
                    break
        return best
