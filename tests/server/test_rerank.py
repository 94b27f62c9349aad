"""POST /rerank with --reranking, on a tiny random reranker written by tools/make_test_gguf.py.

Its scores are noise, so the tests check the shape, the order, top_n, that a document scores the
same alone or among others, that the server scores exactly the prompt llama.cpp builds (by
scoring that prompt in this process with the engine), and the errors.
"""
from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from llamacy.engine.context import Batch, Context
from llamacy.engine.model import Model

TOOLS = Path(__file__).resolve().parents[2] / "tools"
QUERY = "What is a panda?"
DOCS = ["hi", "It's a bear.", "The giant panda is a bear species endemic to China.",
        "Paris is the capital of France.", "Pandas eat bamboo."]
TEMPLATE = "<|im_start|>Judge.\nQuery: {query}\nDocument: {document}<|im_end|>\n"
ROUTES = ["/rerank", "/reranking", "/v1/rerank", "/v1/reranking"]
UBATCH = 256


def _make(tmp_path_factory, *extra: str) -> str:
    out = tmp_path_factory.mktemp("rerank") / "rerank.gguf"
    subprocess.run([sys.executable, str(TOOLS / "make_test_gguf.py"), str(out), "--reranker", *extra], check=True)
    return str(out)


@pytest.fixture(scope="module")
def reranker(tmp_path_factory) -> str:
    return _make(tmp_path_factory)


@pytest.fixture(scope="module")
def templated(tmp_path_factory) -> str:
    return _make(tmp_path_factory, "--rerank-template", TEMPLATE)


@pytest.fixture(scope="module")
def server(server_factory, reranker):
    return server_factory("-m", reranker, "--reranking", "-c", "512", "-ub", str(UBATCH), "-np", "2", "-t", "1",
                          "--max-embedding-inputs", "32")


def rerank(server, path="/rerank", **body):
    r = server.post(path, json={"query": QUERY, "documents": DOCS, **body})
    assert r.status_code == 200, r.text
    return r.json()


def engine_score(model_path: str, tokens: list[int]) -> float:
    """The first classifier output for ``tokens``, computed here with the engine directly."""
    model = Model(model_path)
    ctx = Context(model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=1, pooling="rank", embeddings=True)
    batch = Batch(len(tokens), 1)
    batch.add_sequence(tokens, 0, 0, True)
    ctx.decode(batch)
    score = float(ctx.embeddings_seq(0)[0])
    ctx.close()
    model.close()
    return score


def tokenize(server, text: str, special: bool = False) -> list[int]:
    return server.post("/tokenize", json={"content": text, "add_special": False, "parse_special": special}).json()[
        "tokens"]


def test_shape_order_and_usage(server, reranker):
    res = rerank(server)
    assert set(res) == {"model", "object", "usage", "results"}
    assert res["object"] == "list" and res["model"] == reranker
    results = res["results"]
    assert sorted(r["index"] for r in results) == list(range(len(DOCS)))
    assert all(set(r) == {"index", "relevance_score"} for r in results)
    scores = [r["relevance_score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores) and len(set(scores)) == len(DOCS)   # P("yes"), and noise
    # [BOS] query [EOS] [SEP] document [EOS]: four special tokens around each pair
    q = len(tokenize(server, QUERY))
    n = sum(q + len(tokenize(server, d)) + 4 for d in DOCS)
    assert res["usage"] == {"prompt_tokens": n, "total_tokens": n}
    assert rerank(server, model="my-reranker")["model"] == "my-reranker"


@pytest.mark.parametrize("path", ROUTES[1:])
def test_every_route_answers_alike(server, path):
    assert rerank(server, path)["results"] == rerank(server)["results"]


def test_top_n(server):
    full = rerank(server)["results"]
    assert rerank(server, top_n=1)["results"] == full[:1]
    assert rerank(server, top_n=3)["results"] == full[:3]
    assert rerank(server, top_n=100)["results"] == full


def test_a_document_scores_the_same_alone(server):
    together = {r["index"]: r["relevance_score"] for r in rerank(server)["results"]}
    for i, doc in enumerate(DOCS):
        (alone,) = rerank(server, documents=[doc])["results"]
        assert alone["index"] == 0
        assert alone["relevance_score"] == pytest.approx(together[i], rel=1e-5, abs=1e-6)
    # the same document twice scores twice the same
    twice = rerank(server, documents=[DOCS[2], DOCS[0], DOCS[2]])["results"]
    by_index = {r["index"]: r["relevance_score"] for r in twice}
    assert by_index[0] == by_index[2]


def test_server_scores_llama_cpp_s_prompt(server, reranker):
    model = Model(reranker, vocab_only=True)
    v = model.vocab
    specials = (v.bos, v.eos, v.sep)
    layout = [v.bos, *v.tokenize(QUERY), v.eos, v.sep, *v.tokenize(DOCS[2]), v.eos]
    model.close()
    (served,) = rerank(server, documents=[DOCS[2]])["results"]
    assert served["relevance_score"] == pytest.approx(engine_score(reranker, layout), rel=1e-5, abs=1e-6)
    # the special tokens matter: without them the score is another one
    bare = [t for t in layout if t not in specials]
    assert served["relevance_score"] != pytest.approx(engine_score(reranker, bare), rel=1e-3)


def test_rerank_template_is_used(server_factory, templated):
    srv = server_factory("-m", templated, "--reranking", "-c", "512", "-t", "1")
    r = srv.post("/v1/rerank", json={"query": QUERY, "documents": [DOCS[4]]})
    assert r.status_code == 200, r.text
    text = TEMPLATE.replace("{query}", QUERY).replace("{document}", DOCS[4])
    tokens = tokenize(srv, text, special=True)
    assert r.json()["usage"]["prompt_tokens"] == len(tokens)
    assert r.json()["results"][0]["relevance_score"] == pytest.approx(engine_score(templated, tokens), rel=1e-5,
                                                                      abs=1e-6)


def test_tei_format(server):
    full = rerank(server)["results"]
    r = server.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True, "top_n": 2})
    assert r.status_code == 200, r.text
    assert r.json() == [{"index": x["index"], "score": x["relevance_score"], "text": DOCS[x["index"]]}
                        for x in full[:2]]
    plain = server.post("/rerank", json={"query": QUERY, "texts": DOCS}).json()
    assert plain == [{"index": x["index"], "score": x["relevance_score"]} for x in full]


def test_concurrent_requests_get_their_own_results(server):
    expected = {i: rerank(server, documents=DOCS[i:])["results"] for i in range(3)}
    with ThreadPoolExecutor(6) as pool:
        futures = [(i, pool.submit(rerank, server, documents=DOCS[i:])) for i in (0, 1, 2, 0, 1, 2)]
        got = [(i, f.result()["results"]) for i, f in futures]
    for i, results in got:
        assert [r["index"] for r in results] == [r["index"] for r in expected[i]]
        np.testing.assert_allclose([r["relevance_score"] for r in results],
                                   [r["relevance_score"] for r in expected[i]], rtol=1e-5, atol=1e-6)


def test_embeddings_on_a_rank_server_are_the_classifier_outputs(server):
    r = server.post("/embedding", json={"content": "hello"})
    assert r.status_code == 200, r.text
    vec = np.asarray(r.json()["embedding"])
    assert vec.shape == (2,) and (vec > 0).all() and abs(np.linalg.norm(vec) - 1) < 1e-6


BAD = [
    ({"documents": DOCS}, "'query' is required"),
    ({"query": 5, "documents": DOCS}, "'query' must be a string"),
    ({"query": QUERY}, "'documents' must be a non-empty array of strings"),
    ({"query": QUERY, "documents": []}, "'documents' must be a non-empty array of strings"),
    ({"query": QUERY, "documents": "one document"}, "'documents' must be a non-empty array of strings"),
    ({"query": QUERY, "documents": ["a", None]}, "'documents' must be a non-empty array of strings"),
    ({"query": QUERY, "documents": ["a"] * 33}, "'documents' has 33 items, more than the limit of 32 "
                                                "(--max-embedding-inputs)"),
    ({"query": QUERY, "documents": DOCS, "top_n": 0}, "'top_n' must be in [1, inf], got 0"),
    ({"query": QUERY, "documents": DOCS, "top_n": 1.5}, "'top_n' must be an integer, got float: '1.5'"),
    ({"query": QUERY, "documents": ["short", " ".join(["word"] * 400)]},
     f"document 1: the query and document take 409 tokens, more than the physical batch size ({UBATCH}); "
     "raise --ubatch-size"),
    ({"query": " ".join(["word"] * 400), "documents": ["short"]},
     f"'query' has 400 tokens, more than the physical batch size ({UBATCH}); raise --ubatch-size"),
    ([QUERY, DOCS], "request body must be a JSON object"),
]


@pytest.mark.parametrize("body, message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_input_is_400(server, body, message):
    r = server.post("/rerank", json=body)
    assert r.status_code == 400, r.text
    assert r.json() == {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    assert server.get("/health").json()["status"] == "ok"


def test_rerank_needs_reranking(server_factory, reranker):
    srv = server_factory("-m", reranker, "--embeddings", "--pooling", "mean", "-c", "512", "-t", "1")
    for path in ROUTES:
        r = srv.post(path, json={"query": QUERY, "documents": DOCS})
        assert r.status_code == 501, r.text
        assert r.json() == {"error": {"code": 501, "type": "not_supported_error", "message":
                                      "This server does not support reranking. Start it with `--reranking`"}}


def test_reranking_without_a_reranker_fails_at_start(server_factory):
    srv = server_factory("--reranking", "-c", "512", "-t", "1", wait=False)
    assert srv.proc.wait(120) == 1
    assert ("failed to load model: rank pooling (reranking) needs a reranker model with a classification head "
            "(a cls or cls.output tensor); SmolLM2-135M-Instruct.Q4_1.gguf has none") in srv.log()


def test_reranking_and_another_pooling_is_refused(server_factory, reranker):
    srv = server_factory("-m", reranker, "--reranking", "--pooling", "mean", wait=False)
    assert srv.proc.wait(60) == 2
    assert "--reranking uses rank pooling; it can't go with --pooling mean" in srv.log()
