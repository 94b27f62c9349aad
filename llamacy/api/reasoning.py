"""Reasoning ("thinking") blocks in model output: ``<think>…</think>`` and its equivalents.

A reasoning model writes its thoughts in a block at the start of its answer; templates that
force thinking end the prompt with the opening tag, so the output starts inside the block.
``ReasoningSplitter`` separates the block from the answer as text streams in, holding back any
suffix that could still grow into a tag, so a partial ``<think>`` or ``</think>`` never reaches
either side. Pure: no I/O, no engine.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["REASONING_FORMATS", "THINK_TAGS", "ReasoningSpec", "ReasoningSplitter", "reasoning_spec",
           "split_reasoning"]

REASONING_FORMATS = ("none", "deepseek")

# (opening, closing) tag pairs of common reasoning templates: DeepSeek R1 / Qwen3 / QwQ,
# Command R7B, Magistral, Seed-OSS.
THINK_TAGS: tuple[tuple[str, str], ...] = (
    ("<think>", "</think>"),
    ("<|START_THINKING|>", "<|END_THINKING|>"),
    ("[THINK]", "[/THINK]"),
    ("<seed:think>", "</seed:think>"),
)


@dataclass(frozen=True)
class ReasoningSpec:
    """How to read one response: ``enabled`` False leaves thoughts in the content as written;
    ``starts_inside`` means the prompt already opened the block."""

    enabled: bool = True
    open_tag: str = "<think>"
    close_tag: str = "</think>"
    starts_inside: bool = False


def find_open_tag_at_end(prompt: str) -> tuple[str, str] | None:
    """The tag pair whose opening tag ends ``prompt`` (trailing whitespace aside), if any."""
    tail = prompt.rstrip()
    for pair in THINK_TAGS:
        if tail.endswith(pair[0]):
            return pair
    return None


def reasoning_spec(reasoning_format: str, prompt: str, template_source: str = "") -> ReasoningSpec:
    """The spec for a response to ``prompt``: the tags the template uses (``<think>`` when it
    names none), and whether the prompt leaves the block open."""
    opened = find_open_tag_at_end(prompt)
    pair = opened or next((p for p in THINK_TAGS if p[0] in template_source), THINK_TAGS[0])
    return ReasoningSpec(enabled=reasoning_format != "none", open_tag=pair[0], close_tag=pair[1],
                         starts_inside=opened is not None)


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ReasoningSplitter:
    """Incremental split of output text into (reasoning, content). ``feed`` returns the newly
    safe parts; ``finish`` releases what was held back. Only a block at the very start of the
    output (after whitespace) counts as reasoning."""

    _START, _THINKING, _CONTENT = range(3)

    def __init__(self, spec: ReasoningSpec) -> None:
        self.spec = spec
        self._pending = ""
        self._after_block = False
        if not spec.enabled:
            self._state = self._CONTENT
        else:
            self._state = self._THINKING if spec.starts_inside else self._START

    def feed(self, text: str) -> tuple[str, str]:
        """Add output text; returns (reasoning, content) that can be sent now."""
        buf = self._pending + text
        self._pending = ""
        reasoning, content = "", ""
        if self._state == self._START:
            stripped = buf.lstrip()
            tag = self.spec.open_tag
            if stripped.startswith(tag):
                buf = stripped[len(tag):]
                self._state = self._THINKING
            elif not stripped or tag.startswith(stripped):
                self._pending = buf          # whitespace or a partial opening tag: wait
                return "", ""
            else:
                self._state = self._CONTENT
        if self._state == self._THINKING:
            close = self.spec.close_tag
            end = buf.find(close)
            if end < 0:
                keep = _partial_suffix(buf, close)
                reasoning = buf[:len(buf) - keep]
                self._pending = buf[len(buf) - keep:]
                return reasoning, ""
            reasoning = buf[:end]
            buf = buf[end + len(close):]
            self._state = self._CONTENT
            self._after_block = True
        if self._after_block:               # the answer starts after the blank line(s)
            buf = buf.lstrip()
            self._after_block = not buf
        return reasoning, buf

    def finish(self) -> tuple[str, str]:
        """End of output: whatever is held back. An unclosed block stays reasoning; a lone
        partial opening tag is content."""
        rest, self._pending = self._pending, ""
        if self._state == self._THINKING:
            return rest, ""
        return "", rest


def split_reasoning(spec: ReasoningSpec, text: str) -> tuple[str, str]:
    """The whole output split at once: (reasoning, content)."""
    splitter = ReasoningSplitter(spec)
    r1, c1 = splitter.feed(text)
    r2, c2 = splitter.finish()
    return r1 + r2, c1 + c2
