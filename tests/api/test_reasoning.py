"""api/reasoning.py: think blocks split from the answer, at once and while streaming; a partial
tag never reaches either side."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from llamacy.api.reasoning import (THINK_TAGS, ReasoningSpec, ReasoningSplitter, reasoning_spec,
                                   split_reasoning)

ON = ReasoningSpec()
INSIDE = ReasoningSpec(starts_inside=True)


@pytest.mark.parametrize("spec, text, expected", [
    (ON, "<think>hmm</think>\n\nYes.", ("hmm", "Yes.")),
    (ON, "  \n<think>a\nb</think>Yes", ("a\nb", "Yes")),
    (ON, "No thinking here.", ("", "No thinking here.")),
    (ON, "Answer <think>x</think>", ("", "Answer <think>x</think>")),   # only at the start
    (ON, "<think>never closed", ("never closed", "")),
    (ON, "<thi", ("", "<thi")),                                         # partial tag at the end is text
    (INSIDE, "plan</think>\n\nDone", ("plan", "Done")),
    (INSIDE, "still thinking", ("still thinking", "")),
    (ReasoningSpec(enabled=False), "<think>x</think>y", ("", "<think>x</think>y")),
    (ReasoningSpec(open_tag="[THINK]", close_tag="[/THINK]"), "[THINK]q[/THINK]a", ("q", "a")),
])
def test_split(spec, text, expected):
    assert split_reasoning(spec, text) == expected


def test_partial_tags_are_held_back_while_streaming():
    s = ReasoningSplitter(ON)
    assert s.feed("<th") == ("", "")
    assert s.feed("ink>I should ") == ("I should ", "")
    assert s.feed("answer</th") == ("answer", "")
    assert s.feed("ink>\n") == ("", "")
    assert s.feed("\nHello") == ("", "Hello")
    assert s.feed(" world") == ("", " world")
    assert s.finish() == ("", "")


def chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({c % (len(text) + 1) for c in cuts})
    return [text[a:b] for a, b in zip([0] + points, points + [len(text)])]


@given(thought=st.text(alphabet="ab </>\nk", max_size=20), answer=st.text(alphabet="xy <>/\n", max_size=20),
       cuts=st.lists(st.integers(0, 200), max_size=8), inside=st.booleans())
def test_streaming_equals_whole_and_never_leaks_tags(thought, answer, cuts, inside):
    if "</think>" in thought:
        return
    text = ("" if inside else "<think>") + thought + "</think>" + answer
    spec = ReasoningSpec(starts_inside=inside)
    s = ReasoningSplitter(spec)
    reasoning, content = [], []
    for piece in chunked(text, cuts):
        r, c = s.feed(piece)
        reasoning.append(r)
        content.append(c)
    r, c = s.finish()
    reasoning.append(r)
    content.append(c)
    assert ("".join(reasoning), "".join(content)) == split_reasoning(spec, text)
    assert "".join(reasoning) == thought
    assert "".join(content) == answer.lstrip()
    for part in reasoning:
        assert "</think>" not in part


def test_spec_from_prompt_and_template():
    assert reasoning_spec("deepseek", "<|im_start|>assistant\n<think>\n").starts_inside
    assert not reasoning_spec("deepseek", "<|im_start|>assistant\n").starts_inside
    spec = reasoning_spec("deepseek", "x [THINK]")
    assert (spec.open_tag, spec.close_tag, spec.starts_inside) == ("[THINK]", "[/THINK]", True)
    spec = reasoning_spec("deepseek", "x", template_source="... <|START_THINKING|> ...")
    assert spec.open_tag == "<|START_THINKING|>" and not spec.starts_inside
    assert not reasoning_spec("none", "<think>").enabled
    assert len(THINK_TAGS) >= 4
