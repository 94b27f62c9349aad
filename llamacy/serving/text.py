"""Turning generated token bytes into text that is safe to send: UTF-8 never split, stop
strings never leaked (a possible stop-string prefix is held back until it resolves)."""
from __future__ import annotations

import codecs


class TextStream:
    """Incremental detokenizer + stop-string matcher for one generation."""

    __slots__ = ("_decoder", "text", "sent", "stops", "_max_stop", "stopping_word")

    def __init__(self, stops: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.text = ""              # all text decoded so far (truncated at a stop string)
        self.sent = 0               # how much of ``text`` has been handed out
        self.stops = [s for s in stops if s]
        self._max_stop = max((len(s) for s in self.stops), default=0)
        self.stopping_word = ""

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; returns the newly sendable text (may be ""). Sets
        ``stopping_word`` when a stop string completes (the text is cut before it)."""
        new = self._decoder.decode(piece)
        if not new:
            return ""
        self.text += new
        if not self.stops:
            out = self.text[self.sent:]
            self.sent = len(self.text)
            return out
        start = max(0, len(self.text) - len(new) - self._max_stop + 1)
        best = -1
        for s in self.stops:
            pos = self.text.find(s, start)
            if pos != -1 and (best == -1 or pos < best):
                best, self.stopping_word = pos, s
        if best != -1:
            self.text = self.text[:best]
            return self._release(len(self.text))
        return self._release(len(self.text) - self._held_back())

    def flush(self) -> str:
        """End of generation: release whatever is still held back (incl. partial UTF-8)."""
        if not self.stopping_word:
            self.text += self._decoder.decode(b"", final=True)
        return self._release(len(self.text))

    def _held_back(self) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        text, best = self.text, 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def _release(self, upto: int) -> str:
        upto = max(upto, self.sent)
        out = self.text[self.sent:upto]
        self.sent = upto
        return out
