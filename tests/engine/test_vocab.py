"""Tokenizer round trips through libllama: UTF-8, special tokens, pieces."""
from __future__ import annotations

import pytest

TEXTS = [
    "Hello, world!",
    "café, naïve, résumé — déjà vu",
    "emoji 😀 and 👩‍💻 together",
    "日本語のテキストと中文文本",
    "mixed: é😀日 at the end 日",
    "  leading and trailing spaces  \n\ttabs\n",
]

IM_START = "<|im_start|>"


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(vocab, text):
    toks = vocab.tokenize(text)
    assert toks and all(0 <= t < vocab.n_vocab for t in toks)
    assert vocab.detokenize(toks) == text


@pytest.mark.parametrize("text", TEXTS)
def test_pieces_concatenate_to_detokenize(vocab, text):
    toks = vocab.tokenize(text)
    # A single piece may be a partial UTF-8 sequence; only the concatenation must decode.
    joined = b"".join(vocab.token_to_piece(t) for t in toks)
    assert joined.decode("utf-8") == vocab.detokenize(toks) == text


def test_multibyte_characters_split_into_byte_pieces(vocab):
    toks = vocab.tokenize("😀")
    pieces = [vocab.token_to_piece(t) for t in toks]
    assert b"".join(pieces) == "😀".encode()
    if len(pieces) > 1:  # then at least one piece alone is not valid UTF-8
        with pytest.raises(UnicodeDecodeError):
            for p in pieces:
                p.decode("utf-8")


def test_tokenize_accepts_utf8_bytes(vocab):
    text = "é😀日"
    assert vocab.tokenize(text.encode()) == vocab.tokenize(text)


def test_empty_text(vocab):
    assert vocab.tokenize("") == []
    assert vocab.detokenize([]) == ""


def test_parse_special(vocab):
    special = vocab.tokenize(IM_START, parse_special=True)
    assert len(special) == 1
    assert vocab.is_control(special[0])
    plain = vocab.tokenize(IM_START, parse_special=False)
    assert len(plain) > 1 and special[0] not in plain
    assert vocab.detokenize(plain) == IM_START


def test_parse_special_inside_text(vocab):
    toks = vocab.tokenize(f"{IM_START}user\nhi", parse_special=True)
    im_start = vocab.tokenize(IM_START, parse_special=True)[0]
    assert toks[0] == im_start and toks.count(im_start) == 1
    assert vocab.detokenize(toks, unparse_special=True) == f"{IM_START}user\nhi"


def test_unparse_special(vocab):
    im_start = vocab.tokenize(IM_START, parse_special=True)[0]
    assert vocab.detokenize([im_start], unparse_special=True) == IM_START
    assert vocab.detokenize([im_start], unparse_special=False) == ""
    assert vocab.token_to_piece(im_start, True) == IM_START.encode()
    assert vocab.token_to_piece(im_start, False) == b""
    assert vocab.token_text(im_start) == IM_START


def test_detokenize_special_flags(vocab):
    text = f"{IM_START}hi<|im_end|>"
    toks = vocab.tokenize(text, parse_special=True)
    assert len(toks) == 3
    assert vocab.detokenize(toks, unparse_special=True) == text
    assert vocab.detokenize(toks, unparse_special=False) == "hi"
    # remove_special drops only a BOS/EOS the model adds itself; SmolLM2 adds neither.
    if not vocab.add_bos and not vocab.add_eos:
        assert vocab.detokenize(toks, remove_special=True, unparse_special=True) == text


def test_special_token_ids(vocab):
    n = vocab.n_vocab
    for tok in (vocab.eos, vocab.nl):
        assert 0 <= tok < n
    assert vocab.token_to_piece(vocab.nl) == b"\n"
    assert vocab.tokenize("\n") == [vocab.nl]
    eog = vocab.eog_tokens()
    assert vocab.eos in eog
    assert all(vocab.is_eog(t) for t in eog)
    assert not vocab.is_eog(vocab.nl)
    assert isinstance(vocab.add_bos, bool)


def test_add_special_follows_add_bos(vocab):
    with_special = vocab.tokenize("Hello", add_special=True)
    without = vocab.tokenize("Hello", add_special=False)
    if vocab.add_bos:
        assert with_special == [vocab.bos] + without
    else:
        assert with_special[-len(without):] == without


def test_pieces_table(vocab):
    pieces = vocab.pieces
    assert len(pieces) == vocab.n_vocab
    assert pieces is vocab.pieces  # built once
    for t in (vocab.nl, 100, 1000, vocab.n_vocab - 1):
        assert pieces[t] == vocab.token_to_piece(t)
    im_start = vocab.tokenize(IM_START, parse_special=True)[0]
    assert pieces[im_start] == b""


def test_out_of_range_tokens_raise(vocab):
    with pytest.raises(ValueError):
        vocab.detokenize([vocab.n_vocab])
    with pytest.raises(ValueError):
        vocab.detokenize([-1])
    with pytest.raises(ValueError):
        vocab.token_to_piece(vocab.n_vocab)
    with pytest.raises(ValueError):
        vocab.token_text(-5)
