"""/embedding and /v1/embeddings with --embeddings."""
from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openai
import pytest


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "-np", "4", "--embeddings")


def cos(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_native_embedding(server):
    r = server.post("/embedding", json={"content": "hello world"})
    assert r.status_code == 200, r.text
    emb = r.json()["embedding"]
    assert len(emb) == 576
    assert abs(np.linalg.norm(emb) - 1.0) < 1e-3


def test_embedding_is_deterministic_and_meaningful(server):
    e = lambda t: server.post("/embedding", json={"content": t}).json()["embedding"]  # noqa: E731
    a, a2 = e("The cat sat on the mat."), e("The cat sat on the mat.")
    assert a == a2
    assert cos(a, e("A cat was sitting on the mat.")) > cos(a, e("Quarterly revenue grew by 4%."))


def test_openai_embeddings(server):
    c = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    single = c.embeddings.create(model="GPT-4", input="hello", encoding_format="float")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 576
    many = c.embeddings.create(model="GPT-4", input=["hello", "world", "hello"])
    assert [d.index for d in many.data] == [0, 1, 2]
    assert cos(many.data[0].embedding, single.data[0].embedding) > 0.9999
    assert cos(many.data[0].embedding, many.data[2].embedding) > 0.9999
    assert many.usage.prompt_tokens > 0


def test_batch_equals_single(server):
    """An input's vector is bit-identical whatever shares its request or the server's batch."""
    texts = [f"sentence number {i} about topic {i * 7}" for i in range(6)]
    batch = server.post("/v1/embeddings", json={"input": texts}).json()["data"]
    for i, t in enumerate(texts):
        one = server.post("/v1/embeddings", json={"input": t}).json()["data"][0]["embedding"]
        assert batch[i]["embedding"] == one
    mixed = server.post("/v1/embeddings", json={"input": ["x", texts[3], "a much longer input " * 20, texts[3]]})
    assert mixed.json()["data"][1]["embedding"] == mixed.json()["data"][3]["embedding"] == batch[3]["embedding"]


def test_concurrent_requests_give_identical_vectors(server):
    """Requests arriving together share embedding steps; each input's vector stays the same."""
    text = "The same sentence, sent by many clients at once."
    alone = server.post("/embedding", json={"content": text}).json()["embedding"]
    bodies = [{"content": text}, {"content": [f"other input {i}" for i in range(5)] + [text]}] * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda body: server.post("/embedding", json=body), bodies))
    for body, r in zip(bodies, results):
        assert r.status_code == 200, r.text
        got = r.json()
        vec = got["embedding"] if isinstance(body["content"], str) else got[-1]["embedding"]
        assert vec == alone


def test_base64_encoding(server):
    f = server.post("/v1/embeddings", json={"input": "hello"}).json()["data"][0]["embedding"]
    b = server.post("/v1/embeddings", json={"input": "hello", "encoding_format": "base64"}).json()
    vec = np.frombuffer(base64.b64decode(b["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(vec, f, atol=1e-6)


def test_bad_inputs(server):
    for body in ({"input": 5}, {"input": []}, {"input": "x", "encoding_format": "hex"}, {"input": [""]}):
        r = server.post("/v1/embeddings", json=body)
        assert r.status_code == 400, body
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = server.post("/embedding", json={"content": "word " * 2000})
    assert r.status_code == 400 and "batch" in r.json()["error"]["message"]
    assert server.get("/health").json()["slots_idle"] == 4


def test_content_parts_input_embeds_as_the_joined_text(server):
    r = server.post("/v1/embeddings", json={"input": [
        "hello world", {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]}]})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data[0]["embedding"] == data[1]["embedding"]
    assert r.json()["usage"]["prompt_tokens"] == 2 * len(server.post("/tokenize", json={
        "content": "hello world", "add_special": True}).json()["tokens"])
    alone = server.post("/v1/embeddings", json={"input": {"content": [{"type": "text", "text": "hello world"}]}})
    assert alone.status_code == 200 and alone.json()["data"][0]["embedding"] == data[0]["embedding"]


@pytest.mark.parametrize("item,message", [
    ({"content": "string"}, "input[0].content must be a non-empty array of content parts"),
    ({"content": []}, "input[0].content must be a non-empty array of content parts"),
    ({"content": [{"type": "unknown"}]},
     "input[0].content[0]: only text parts are accepted here, got 'unknown' (images go to /embedding with image_data)"),
    ({"content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
     "input[0].content[0]: only text parts are accepted here, got 'image_url' (images go to /embedding with image_data)"),
    ({"content": [{"type": "text", "text": 5}]}, "input[0].content[0].text must be a string"),
])
def test_bad_content_parts_input(server, item, message):
    r = server.post("/v1/embeddings", json={"input": [item]})
    assert r.status_code == 400
    assert r.json()["error"] == {"code": 400, "message": message, "type": "invalid_request_error"}


def test_completion_still_works_with_embeddings_on(server):
    r = server.post("/completion", json={"prompt": "The capital of France is", "n_predict": 8, "temperature": 0})
    assert "Paris" in r.json()["content"]
