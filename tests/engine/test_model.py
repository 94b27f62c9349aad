"""Model loading and its metadata; load failures raise ModelLoadError naming the path."""
from __future__ import annotations

import numpy as np
import pytest

from llamacy.engine.model import Model
from llamacy.errors import LlamacyError, ModelLoadError


def test_model_properties(model):
    assert model.n_vocab == model.vocab.n_vocab > 1000
    assert model.n_ctx_train >= 2048
    assert model.n_embd > 0 and model.n_layer > 0
    assert model.size > 0 and model.n_params > 100_000_000
    assert "llama" in model.desc.lower()
    assert not model.has_encoder


def test_metadata(model):
    meta = model.metadata
    assert meta.get("general.architecture") == "llama"
    assert all(isinstance(k, str) for k in meta)


def test_chat_template(model):
    tmpl = model.chat_template()
    assert tmpl and "im_start" in tmpl


def test_missing_file(tmp_path):
    path = tmp_path / "nope" / "missing.gguf"
    with pytest.raises(ModelLoadError) as info:
        Model(path)
    assert str(path) in str(info.value)


def test_directory_is_not_a_model(tmp_path):
    with pytest.raises(ModelLoadError) as info:
        Model(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("header", [b"", b"GGUF", b"GGUF\x03\x00\x00\x00"], ids=["random", "magic", "magic-v3"])
def test_garbage_file(tmp_path, header):
    path = tmp_path / "garbage.gguf"
    path.write_bytes(header + np.random.default_rng(len(header)).bytes(4096))
    with pytest.raises(ModelLoadError) as info:
        Model(str(path))
    assert str(path) in str(info.value)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(ModelLoadError) as info:
        Model(path)
    assert str(path) in str(info.value)


def test_truncated_model(tmp_path, model_path):
    path = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as f:
        path.write_bytes(f.read(2_000_000))
    with pytest.raises(ModelLoadError) as info:
        Model(path)
    assert str(path) in str(info.value)


def test_vocab_only_and_close(model_path):
    m = Model(model_path, vocab_only=True)
    assert m.vocab.tokenize("Hello") == m.vocab.tokenize("Hello")
    vocab = m.vocab
    m.close()
    m.close()  # safe twice
    with pytest.raises(LlamacyError):
        vocab.tokenize("Hello")
    with pytest.raises(LlamacyError):
        m.n_embd
