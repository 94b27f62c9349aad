"""TextStream: UTF-8 never split across pushes, stop strings never leaked."""
from __future__ import annotations

from hypothesis import given, strategies as st

from llamacy.serving.text import TextStream


def run(pieces: list[bytes], stops: list[str]) -> tuple[list[str], TextStream]:
    ts = TextStream(stops)
    out = []
    for p in pieces:
        out.append(ts.push(p))
        if ts.stopping_word:
            break
    out.append(ts.flush())
    return out, ts


def test_multibyte_character_split_over_tokens_is_held_until_complete():
    emoji = "😀".encode()
    out, _ = run([b"a", emoji[:2], emoji[2:], b"b"], [])
    assert out == ["a", "", "😀", "b", ""]


def test_stop_string_is_cut_and_never_sent():
    out, ts = run([b"Hello", b" wor", b"ld", b" again"], ["world"])
    assert "".join(out) == "Hello "
    assert ts.stopping_word == "world" and ts.text == "Hello "


def test_possible_stop_prefix_is_held_back_then_released():
    ts = TextStream(["STOP"])
    assert ts.push(b"abc ST") == "abc "
    assert ts.push(b"ART") == "START"
    assert ts.flush() == ""


def test_earliest_of_several_stops_wins():
    out, ts = run([b"one two three"], ["three", "two"])
    assert "".join(out) == "one " and ts.stopping_word == "two"


def test_flush_releases_a_held_prefix_at_the_end():
    out, ts = run([b"end with S"], ["STOP"])
    assert "".join(out) == "end with S" and not ts.stopping_word


@given(st.text(st.characters(codec="utf-8", exclude_characters="\ufffd"), min_size=0, max_size=40), st.lists(st.integers(1, 8), min_size=1, max_size=40),
       st.sampled_from(["", "xy", "\n\n", "é!"]))
def test_any_split_gives_the_text_before_the_first_stop(text, cuts, stop):
    data = text.encode()
    pieces, i = [], 0
    for c in cuts:
        pieces.append(data[i:i + c])
        i += c
    pieces.append(data[i:])
    out, ts = run(pieces, [stop] if stop else [])
    expected = text.split(stop)[0] if stop else text
    assert "".join(out) == expected
    assert all("\ufffd" not in o for o in out)
