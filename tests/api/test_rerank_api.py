"""llamacy.api.rerank: request parsing, the rerank prompt layout (real vocabs), the response shape."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from llamacy.api.rerank import RerankRequest, parse_rerank, rerank_prompt, rerank_response
from llamacy.engine.model import Model
from llamacy.errors import InvalidRequestError
from llamacy.models import default_model_path

TOOLS = Path(__file__).resolve().parents[2] / "tools"
TEMPLATE = "<|im_start|>Q: {query}<|im_end|>\nD: {document}<|im_end|>"


@pytest.fixture(scope="module")
def reranker_vocab(tmp_path_factory):
    out = tmp_path_factory.mktemp("rerank") / "rerank.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(out), "--reranker"], check=True)
    model = Model(str(out), vocab_only=True)
    yield model.vocab
    model.close()


@pytest.fixture(scope="module")
def plain_vocab():
    model = Model(default_model_path(), vocab_only=True)
    yield model.vocab
    model.close()


def test_layout_bos_query_eos_sep_document_eos(reranker_vocab):
    v = reranker_vocab
    assert (v.add_bos, v.add_eos, v.add_sep) == (True, True, True)
    q, d = v.tokenize("What is a panda?"), v.tokenize("A bear <|im_end|> from China.")
    assert rerank_prompt(v, None, "What is a panda?", "A bear <|im_end|> from China.") == [
        v.bos, *q, v.eos, v.sep, *d, v.eos]
    # special-token text in the query or document stays text
    assert v.eos not in d
    assert rerank_prompt(v, None, "x", "y", query_tokens=[7, 8]) == [v.bos, 7, 8, v.eos, v.sep,
                                                                    *v.tokenize("y"), v.eos]


def test_layout_without_special_tokens_asked_for(plain_vocab):
    v = plain_vocab
    assert not (v.add_bos or v.add_eos or v.add_sep)
    assert rerank_prompt(v, None, "What is a panda?", "A bear.") == v.tokenize("What is a panda?") + v.tokenize(
        "A bear.")


def test_layout_from_the_rerank_template(reranker_vocab):
    v = reranker_vocab
    tokens = rerank_prompt(v, TEMPLATE, "a {document} b", "c")
    # filled in order ({query} first, as llama.cpp), special tokens of the template parsed
    assert tokens == v.tokenize("<|im_start|>Q: a c b<|im_end|>\nD: c<|im_end|>", parse_special=True)
    assert tokens.count(v.eos) == 2 and v.bos in tokens


@pytest.mark.parametrize("body, message", [
    ([], "request body must be a JSON object"),
    ({"documents": ["a"]}, "'query' is required"),
    ({"query": None, "documents": ["a"]}, "'query' must be a string"),
    ({"query": ["a"], "documents": ["a"]}, "'query' must be a string"),
    ({"query": "q"}, "'documents' must be a non-empty array of strings"),
    ({"query": "q", "documents": []}, "'documents' must be a non-empty array of strings"),
    ({"query": "q", "documents": "a"}, "'documents' must be a non-empty array of strings"),
    ({"query": "q", "documents": ["a", 1]}, "'documents' must be a non-empty array of strings"),
    ({"query": "q", "documents": [{"text": "a"}]}, "'documents' must be a non-empty array of strings"),
    ({"query": "q", "texts": []}, "'texts' must be a non-empty array of strings"),
    ({"query": "q", "documents": ["a"] * 9}, "'documents' has 9 items, more than the limit of 8 "
                                             "(--max-embedding-inputs)"),
    ({"query": "q", "documents": ["a"], "top_n": 0}, "'top_n' must be in [1, inf], got 0"),
    ({"query": "q", "documents": ["a"], "top_n": "2"}, "'top_n' must be an integer, got str: '2'"),
    ({"query": "q", "texts": ["a"], "return_text": "yes"}, "'return_text' must be a boolean, got str: 'yes'"),
])
def test_bad_requests(body, message):
    with pytest.raises(InvalidRequestError) as err:
        parse_rerank(body, 8)
    assert err.value.message == message


def test_parse_defaults_and_tei():
    req = parse_rerank({"query": "q", "documents": ["a", "b"], "model": "m"}, 8)
    assert req == RerankRequest("q", ["a", "b"], top_n=2, tei=False, return_text=False, model="m")
    req = parse_rerank({"query": "q", "texts": ["a"], "return_text": True, "top_n": 5}, 8)
    assert (req.documents, req.tei, req.return_text, req.top_n, req.model) == (["a"], True, True, 5, None)


def test_response_sorted_and_cut():
    req = RerankRequest("q", ["a", "b", "c", "d"], top_n=3, tei=False, return_text=False, model=None)
    res = rerank_response(req, [0.1, 0.7, 0.3, 0.7], 40, model="served")
    assert res == {"model": "served", "object": "list", "usage": {"prompt_tokens": 40, "total_tokens": 40},
                   "results": [{"index": 1, "relevance_score": 0.7}, {"index": 3, "relevance_score": 0.7},
                               {"index": 2, "relevance_score": 0.3}]}
    tei = RerankRequest("q", ["a", "b"], top_n=2, tei=True, return_text=True, model=None)
    assert rerank_response(tei, [0.2, 0.9], 9, model="served") == [
        {"index": 1, "score": 0.9, "text": "b"}, {"index": 0, "score": 0.2, "text": "a"}]
