"""Rank pooling on a tiny random reranker (tools/make_test_gguf.py --reranker): the classifier's
scores per sequence, their length n_cls_out, and a clear refusal on a model without a head."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llamacy.engine.context import Batch, Context
from llamacy.engine.model import Model
from llamacy.errors import LlamacyError

TOOLS = Path(__file__).resolve().parents[2] / "tools"
TEXTS = ["hello world", "a b c d e f", "The giant panda is a bear.", "hello world"]


@pytest.fixture(scope="module")
def reranker(tmp_path_factory):
    out = tmp_path_factory.mktemp("rerank") / "rerank.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(out), "--reranker"], check=True)
    m = Model(str(out))
    yield m
    m.close()


def _rank_ctx(model, n_seq_max=4):
    return Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_seq_max=n_seq_max, n_threads=1, pooling="rank",
                   embeddings=True, kv_unified=True)


def _scores(ctx, token_lists):
    ctx.memory_clear()
    batch = Batch(512, 1)
    for seq, toks in enumerate(token_lists):
        for pos, t in enumerate(toks):
            batch.add(t, pos, seq, True)
    ctx.decode(batch)
    return [ctx.embeddings_seq(seq) for seq in range(len(token_lists))]


def test_model_reports_its_head(reranker, model):
    assert reranker.has_classifier_head and reranker.n_cls_out == 2
    assert reranker.metadata["qwen3.pooling_type"] == "4"
    assert not model.has_classifier_head and model.n_cls_out == 1
    assert model.n_embd_out == model.n_embd


def test_rank_scores_are_n_cls_out_long_and_per_sequence(reranker):
    ctx = _rank_ctx(reranker)
    assert ctx.pooling == "rank"
    toks = [reranker.vocab.tokenize(t) for t in TEXTS]
    together = _scores(ctx, toks)
    for s in together:
        assert s.shape == (2,) and s.dtype == np.float32
        assert abs(float(s.sum()) - 1.0) < 1e-5 and (s > 0).all()   # the Qwen3 reranker's softmax
    assert np.array_equal(together[0], together[3])                     # same input, same score
    assert len({round(float(s[0]), 6) for s in together[:3]}) == 3       # different inputs differ
    for i, t in enumerate(toks):                                         # one at a time: the same scores
        np.testing.assert_allclose(_scores(ctx, [t])[0], together[i], rtol=1e-5, atol=1e-6)
    ctx.close()


def test_rank_pooling_needs_a_head(model):
    with pytest.raises(LlamacyError, match=r"rank pooling \(reranking\) needs a reranker model with a "
                                           r"classification head \(a cls or cls.output tensor\); "
                                           r"SmolLM2-135M-Instruct.Q4_1.gguf has none"):
        Context(model, n_ctx=256, n_batch=256, n_ubatch=256, pooling="rank", embeddings=True)
    # a generation context of the same model is unaffected
    Context(model, n_ctx=256, n_batch=256, pooling="rank", embeddings=False).close()


def test_pooled_embeddings_keep_n_embd_out(model):
    ctx = Context(model, n_ctx=256, n_batch=256, n_ubatch=256, n_threads=1, pooling="mean", embeddings=True)
    (vec,) = _scores(ctx, [model.vocab.tokenize("hello")])
    assert vec.shape == (model.n_embd_out,)
    ctx.close()
