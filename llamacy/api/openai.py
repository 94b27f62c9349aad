"""OpenAI-compatible shapes: chat/completions and completions requests → CompletionParams,
results → OpenAI's response and chunk objects. Pure functions, no I/O."""
from __future__ import annotations

import math
import secrets
import time
from typing import Any

from llamacy.api.completion import parse_sampling, timings_json, tokenize_prompt
from llamacy.api.fields import get_bool, get_int, get_str_list, require_object
from llamacy.errors import InvalidRequestError
from llamacy.serving.tasks import CompletionParams, Final, TokenProbs


def _n_predict(body: dict, default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens", "n_predict"):
        if body.get(name) is not None:
            return get_int(body, name, default, lo=-1, hi=1 << 24)
    return default


def _check_n(body: dict) -> None:
    if get_int(body, "n", 1, lo=1) != 1:
        raise InvalidRequestError("'n' must be 1: only one choice per request is supported")


def response_format_grammar(body: dict, grammar_from_schema) -> str | None:
    """``response_format``: {"type": "json_object"[, "schema"]} or {"type": "json_schema", "json_schema": {...}}."""
    rf = body.get("response_format")
    if rf is None:
        return None
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise InvalidRequestError("'response_format' must be an object with a 'type'")
    kind = rf["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        schema = rf.get("schema", {"type": "object"})
    elif kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise InvalidRequestError("'response_format.json_schema' must be an object")
        schema = js.get("schema", {})
    else:
        raise InvalidRequestError(f"'response_format.type' must be text, json_object or json_schema, got {kind!r}")
    return grammar_from_schema(schema)


def _logprobs_request(body: dict, *, chat: bool) -> int:
    """How many top tokens to report per generated token (0 = no logprobs)."""
    if chat:
        if not get_bool(body, "logprobs", False):
            if body.get("top_logprobs") is not None:
                raise InvalidRequestError("'top_logprobs' requires 'logprobs': true")
            return 0
        return max(1, get_int(body, "top_logprobs", 1, lo=0, hi=20))
    if body.get("logprobs") is None:
        return 0
    return max(1, get_int(body, "logprobs", 1, lo=0, hi=20))


def parse_chat(body: Any, vocab, chat_template, *, add_bos: bool, grammar_from_schema) -> CompletionParams:
    body = require_object(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("'messages' must be a non-empty array")
    if body.get("tools") or body.get("functions"):
        raise InvalidRequestError("'tools' / function calling is not supported by this server")
    _check_n(body)
    prompt = chat_template.render(messages, add_generation_prompt=True)
    return _params(body, vocab, prompt, add_bos=add_bos, grammar_from_schema=grammar_from_schema, chat=True)


def parse_completions(body: Any, vocab, *, add_bos: bool, grammar_from_schema) -> CompletionParams:
    body = require_object(body)
    if "prompt" not in body:
        raise InvalidRequestError("'prompt' is required")
    _check_n(body)
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # OpenAI's batch form with a single prompt
    if isinstance(prompt, list) and any(isinstance(p, list) for p in prompt):
        raise InvalidRequestError("'prompt' with several prompts is not supported: send one per request")
    return _params(body, vocab, prompt, add_bos=add_bos, grammar_from_schema=grammar_from_schema, chat=False)


def _params(body: dict, vocab, prompt, *, add_bos: bool, grammar_from_schema, chat: bool) -> CompletionParams:
    tokens = tokenize_prompt(vocab, prompt, add_bos=add_bos)
    sampling = parse_sampling(body, vocab)
    sampling.n_probs = max(sampling.n_probs, _logprobs_request(body, chat=chat))
    grammar = response_format_grammar(body, grammar_from_schema)
    if grammar and not sampling.grammar:
        sampling.grammar = grammar
    elif body.get("json_schema") is not None and not sampling.grammar:
        sampling.grammar = grammar_from_schema(body["json_schema"])
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise InvalidRequestError("'stream_options' must be an object")
    return CompletionParams(
        prompt_tokens=tokens, sampling=sampling, n_predict=_n_predict(body, -1),
        n_keep=get_int(body, "n_keep", 0, lo=-1), stop=get_str_list(body, "stop", max_items=1 << 16),
        stream=get_bool(body, "stream", False), cache_prompt=get_bool(body, "cache_prompt", True),
        id_slot=get_int(body, "id_slot", -1, lo=-1), prompt=prompt)


# --- responses ---------------------------------------------------------------------------

def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def finish_reason(ev: Final) -> str:
    return "length" if ev.stopped_limit else "stop"


def usage(ev: Final) -> dict:
    return {"prompt_tokens": ev.tokens_evaluated, "completion_tokens": ev.tokens_predicted,
            "total_tokens": ev.tokens_evaluated + ev.tokens_predicted}


def _lp(p: float) -> float:
    return math.log(p) if p > 0 else -9999.0


def chat_logprobs(probs: list[TokenProbs], pieces) -> dict:
    content = []
    for tp in probs:
        chosen = dict(tp.probs).get(tp.token)
        text = tp.piece.decode("utf-8", "replace")
        content.append({
            "token": text, "logprob": _lp(chosen) if chosen is not None else -9999.0, "bytes": list(tp.piece),
            "top_logprobs": [{"token": pieces[t].decode("utf-8", "replace"), "logprob": _lp(p),
                              "bytes": list(pieces[t])} for t, p in tp.probs]})
    return {"content": content}


def completion_logprobs(probs: list[TokenProbs], pieces) -> dict:
    tokens, token_lps, tops, offsets, offset = [], [], [], [], 0
    for tp in probs:
        text = tp.piece.decode("utf-8", "replace")
        chosen = dict(tp.probs).get(tp.token)
        tokens.append(text)
        token_lps.append(_lp(chosen) if chosen is not None else -9999.0)
        tops.append({pieces[t].decode("utf-8", "replace"): _lp(p) for t, p in tp.probs})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": token_lps, "top_logprobs": tops, "text_offset": offsets}


def chat_response(ev: Final, *, id: str, model: str, n_probs: int, pieces) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": ev.content},
              "finish_reason": finish_reason(ev), "logprobs": chat_logprobs(ev.probs, pieces) if n_probs else None}
    return {"id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": [choice], "usage": usage(ev), "timings": timings_json(ev.timings)}


def chat_chunk(*, id: str, model: str, created: int, delta: dict, finish: str | None = None,
               logprobs: dict | None = None) -> dict:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}


def completions_response(ev: Final, *, id: str, model: str, n_probs: int, pieces) -> dict:
    choice = {"index": 0, "text": ev.content, "finish_reason": finish_reason(ev),
              "logprobs": completion_logprobs(ev.probs, pieces) if n_probs else None}
    return {"id": id, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": None, "choices": [choice], "usage": usage(ev), "timings": timings_json(ev.timings)}


def completions_chunk(*, id: str, model: str, created: int, text: str, finish: str | None = None,
                      logprobs: dict | None = None) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model, "system_fingerprint": None,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": logprobs}]}


def models_list(model_id: str, *, n_ctx_train: int, n_vocab: int, n_params: int, size: int) -> dict:
    return {"object": "list", "data": [{
        "id": model_id, "object": "model", "created": int(time.time()), "owned_by": "llamacy",
        "meta": {"n_ctx_train": n_ctx_train, "n_vocab": n_vocab, "n_params": n_params, "size": size}}]}
