"""The rerank API (llama.cpp's /rerank, Jina's shape, or TEI's with ``texts``): JSON → a typed
request, (query, document) → the model's prompt tokens, scores → the response. No I/O."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llamacy.api.fields import get_bool, get_int, get_str, require_object
from llamacy.errors import InvalidRequestError

@dataclass
class RerankRequest:
    query: str
    documents: list[str]
    top_n: int
    tei: bool             # TEI's format: ``texts`` in, a bare list of {index, score} out
    return_text: bool     # TEI: each result carries its text
    model: str | None


def parse_rerank(body: Any, max_documents: int) -> RerankRequest:
    """``{"query", "documents" | "texts", "top_n"?, "model"?, "return_text"?}``; at most
    ``max_documents`` documents (the server's --max-embedding-inputs)."""
    body = require_object(body)
    if "query" not in body:
        raise InvalidRequestError("'query' is required")
    query = body["query"]
    if not isinstance(query, str):
        raise InvalidRequestError("'query' must be a string")
    tei = "texts" in body                      # as llama.cpp: TEI's shape whenever "texts" is sent
    name = "texts" if tei and "documents" not in body else "documents"
    documents = body.get(name)
    if not isinstance(documents, list) or not documents or not all(isinstance(d, str) for d in documents):
        raise InvalidRequestError(f"'{name}' must be a non-empty array of strings")
    if len(documents) > max_documents:
        raise InvalidRequestError(f"'{name}' has {len(documents)} items, more than the limit of {max_documents} "
                                  "(--max-embedding-inputs)")
    model = get_str(body, "model", "") or None
    return RerankRequest(query=query, documents=documents, top_n=get_int(body, "top_n", len(documents), lo=1),
                         tei=tei, return_text=get_bool(body, "return_text", False),
                         model=model)


def rerank_prompt(vocab, template: str | None, query: str, document: str,
                  query_tokens: list[int] | None = None) -> list[int]:
    """llama.cpp's rerank prompt: the model's ``rerank`` chat template with {query} and
    {document} filled in (special tokens parsed), else ``[BOS] query [EOS] [SEP] document [EOS]``
    with each special token present only where the vocab asks for it (EOS falls back to SEP).
    ``query_tokens`` may pass the query already tokenized (it is the same for every document)."""
    if template is not None:
        text = template.replace("{query}", query).replace("{document}", document)
        return vocab.tokenize(text, add_special=False, parse_special=True)
    if query_tokens is None:
        query_tokens = vocab.tokenize(query, add_special=False, parse_special=False)
    eos = vocab.eos if vocab.eos >= 0 else vocab.sep
    out: list[int] = []
    if vocab.add_bos and vocab.bos >= 0:
        out.append(vocab.bos)
    out += query_tokens
    if vocab.add_eos and eos >= 0:
        out.append(eos)
    if vocab.add_sep and vocab.sep >= 0:
        out.append(vocab.sep)
    out += vocab.tokenize(document, add_special=False, parse_special=False)
    if vocab.add_eos and eos >= 0:
        out.append(eos)
    return out


def rerank_response(req: RerankRequest, scores: list[float], n_tokens: int, *, model: str):
    """Results sorted by score (best first; ties keep input order), cut to ``top_n``."""
    label = "score" if req.tei else "relevance_score"
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:req.top_n]
    results = []
    for i in order:
        item = {"index": i, label: scores[i]}
        if req.tei and req.return_text:
            item["text"] = req.documents[i]
        results.append(item)
    if req.tei:
        return results
    return {"model": req.model or model, "object": "list",
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens}, "results": results}
