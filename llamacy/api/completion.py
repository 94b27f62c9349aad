"""The native /completion API: JSON → CompletionParams, and results → the spec's JSON."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from llamacy.api.fields import get_bool, get_float, get_int, get_str, get_str_list, require_object
from llamacy.api.images import tokenize_with_images
from llamacy.engine.sampling_params import SAMPLER_NAMES, SamplingParams
from llamacy.errors import InvalidRequestError
from llamacy.serving.slots import SlotSnapshot
from llamacy.serving.tasks import CompletionParams, Final, Partial, Progress, Timings, TokenProbs

MAX_RESPONSE_FIELDS = 256


@dataclass(frozen=True)
class ResponseOptions:
    """How a request wants its results shown (today's llama-server options; none changes what
    is generated): ``return_tokens`` (the generated ids in the result), ``response_fields`` (only
    these fields, ``a/b`` naming a nested one), ``timings_per_token`` (timings in every streamed
    chunk), ``verbose`` (the native result under ``__verbose`` in OpenAI shapes)."""

    return_tokens: bool = False
    response_fields: tuple[str, ...] = ()
    timings_per_token: bool = False
    verbose: bool = False


def parse_response_options(body: dict, *, server_verbose: bool = False) -> ResponseOptions:
    fields = get_str_list(body, "response_fields", max_items=MAX_RESPONSE_FIELDS)
    return ResponseOptions(return_tokens=get_bool(body, "return_tokens", False), response_fields=tuple(fields),
                           timings_per_token=get_bool(body, "timings_per_token", False),
                           verbose=get_bool(body, "verbose", False) or server_verbose)


def pick_fields(obj: dict, fields: tuple[str, ...]) -> dict:
    """``response_fields``: only the named fields, ``a/b`` reaching into ``obj["a"]["b"]`` (kept
    under the key ``"a/b"``); a name that is not there is left out."""
    out = {}
    for name in fields:
        value: Any = obj
        for part in name.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            out[name] = value
    return out


class RunningTimings:
    """Timings of a stream so far, for ``timings_per_token`` (the final ones come from the engine)."""

    def __init__(self, n_prompt: int) -> None:
        self.n_prompt = n_prompt
        self.t_start = time.perf_counter()
        self.t_first = 0.0
        self.n_predicted = 0

    def add(self, ev: Partial) -> dict:
        now = time.perf_counter()
        if not self.t_first:
            self.t_first = now
        self.n_predicted += len(ev.tokens)
        return timings_json(Timings(n_prompt=self.n_prompt, prompt_ms=(self.t_first - self.t_start) * 1e3,
                                    n_predicted=self.n_predicted, predicted_ms=(now - self.t_first) * 1e3))


def progress_json(ev: Progress) -> dict:
    return {"total": ev.total, "cache": ev.cache, "processed": ev.processed, "time_ms": ev.time_ms}


def progress_timings_json(ev: Progress) -> dict:
    """The ``timings`` of a prompt-progress chunk (``timings_per_token``): the prompt so far."""
    return timings_json(Timings(n_prompt=ev.processed - ev.cache, prompt_ms=ev.time_ms, n_predicted=0,
                                predicted_ms=0.0, n_cache=ev.cache))

MAX_PROMPT_ITEMS = 1 << 20


MAX_PROMPTS = 64


def prompt_object_text(obj: dict, field: str = "prompt") -> str:
    """Today's prompt object ``{"prompt_string": ..., "multimodal_data": [...]}``: its text
    (multimodal data needs a multimodal model)."""
    if not isinstance(obj.get("prompt_string"), str):
        raise InvalidRequestError(f"a '{field}' object must have a string 'prompt_string'")
    media = obj.get("multimodal_data")
    if media is not None and not (isinstance(media, list) and all(isinstance(m, str) for m in media)):
        raise InvalidRequestError("'multimodal_data' must be an array of base64 strings")
    if media:
        raise InvalidRequestError("'multimodal_data' needs a multimodal model: multimodal input is not supported")
    return obj["prompt_string"]


def split_prompts(prompt: Any) -> list | None:
    """Today's multi-prompt form: an array holding arrays or objects is several prompts, one per
    item (each a string, an array of strings and token ids, or a prompt object), answered with
    one result each. The spec's forms (a string, one array of strings and ids) give None."""
    if not isinstance(prompt, list) or not any(isinstance(p, (list, dict)) for p in prompt):
        return None
    if not 1 <= len(prompt) <= MAX_PROMPTS:
        raise InvalidRequestError(f"'prompt' has {len(prompt)} prompts; at most {MAX_PROMPTS} per request")
    return prompt


def tokenize_prompt(vocab, prompt: Any, *, add_bos: bool, field: str = "prompt") -> list[int]:
    """A prompt given as a string, a token array, or a mixed array of strings and tokens (or
    today's prompt object, ``{"prompt_string"}``).

    A BOS token is inserted when the prompt starts with a string, the model's vocab asks for
    BOS and ``add_bos`` (no system prompt) holds — the spec's rule.
    """
    if isinstance(prompt, dict):
        prompt = prompt_object_text(prompt, field)
    if isinstance(prompt, str):
        parts: list = [prompt]
    elif isinstance(prompt, list):
        if len(prompt) > MAX_PROMPT_ITEMS:
            raise InvalidRequestError(f"'{field}' has too many items")
        parts = prompt
    else:
        raise InvalidRequestError(f"'{field}' must be a string or an array of strings and token ids")
    tokens: list[int] = []
    n_vocab = vocab.n_vocab
    for i, part in enumerate(parts):
        if isinstance(part, str):
            tokens.extend(vocab.tokenize(part, add_special=(i == 0 and add_bos and vocab.add_bos), parse_special=True))
        elif isinstance(part, int) and not isinstance(part, bool):
            if not 0 <= part < n_vocab:
                raise InvalidRequestError(f"'{field}' token {part} out of range [0, {n_vocab})")
            tokens.append(part)
        else:
            raise InvalidRequestError(f"'{field}' items must be strings or token ids")
    return tokens


def _logit_bias(vocab, value: Any) -> list[tuple[int, float | None]]:
    """``[[token|string, bias|false], ...]`` or OpenAI's ``{"token": bias}`` map."""
    if value is None:
        return []
    items = list(value.items()) if isinstance(value, dict) else value
    if not isinstance(items, list):
        raise InvalidRequestError("'logit_bias' must be an array of [token, bias] pairs or an object")
    out: list[tuple[int, float | None]] = []
    for item in items:
        if not (isinstance(item, (list, tuple)) and len(item) == 2):
            raise InvalidRequestError("'logit_bias' items must be [token, bias] pairs")
        key, bias = item
        if bias is False:
            b = None
        elif isinstance(bias, (int, float)) and not isinstance(bias, bool):
            b = float(bias)
        else:
            raise InvalidRequestError("'logit_bias' bias must be a number or false")
        if isinstance(key, str) and isinstance(value, dict) and key.lstrip("-").isdigit():
            key = int(key)
        if isinstance(key, str):
            toks = vocab.tokenize(key, add_special=False, parse_special=False)
        elif isinstance(key, int) and not isinstance(key, bool):
            toks = [key]
        else:
            raise InvalidRequestError("'logit_bias' token must be a token id or a string")
        for t in toks:
            if not 0 <= t < vocab.n_vocab:
                raise InvalidRequestError(f"'logit_bias' token {t} out of range [0, {vocab.n_vocab})")
            out.append((t, b))
    return out


MAX_DRY_BREAKERS = 16
MAX_DRY_BREAKER_BYTES = 40   # libllama truncates longer breakers


def _dry_sequence_breakers(body: dict, default: tuple[str, ...]) -> tuple[str, ...]:
    """llama.cpp's ``dry_sequence_breakers``: a non-empty array of non-empty strings."""
    value = body.get("dry_sequence_breakers")
    if value is None:
        return default
    if not isinstance(value, list) or not value or not all(isinstance(b, str) for b in value):
        raise InvalidRequestError("'dry_sequence_breakers' must be a non-empty array of strings")
    if len(value) > MAX_DRY_BREAKERS:
        raise InvalidRequestError(f"'dry_sequence_breakers' has more than {MAX_DRY_BREAKERS} items")
    for b in value:
        try:
            n_bytes = len(b.encode("utf-8"))
        except UnicodeEncodeError:
            n_bytes = -1
        if not 0 < n_bytes <= MAX_DRY_BREAKER_BYTES or "\x00" in b:
            raise InvalidRequestError(f"'dry_sequence_breakers' items must be 1 to {MAX_DRY_BREAKER_BYTES} bytes "
                                      f"of UTF-8 without NUL, got {b[:60]!r}")
    return tuple(value)


def parse_sampling(body: dict, vocab, defaults: SamplingParams | None = None) -> SamplingParams:
    d = defaults or SamplingParams()
    samplers = body.get("samplers")
    named = samplers is not None
    if samplers is None:
        samplers = list(d.samplers)
    elif not isinstance(samplers, list) or not all(isinstance(s, str) for s in samplers):
        raise InvalidRequestError("'samplers' must be an array of sampler names")
    unknown = [s for s in samplers if s not in SAMPLER_NAMES]
    if unknown:
        raise InvalidRequestError(f"unknown sampler {unknown[0]!r} in 'samplers'; known: {', '.join(sorted(SAMPLER_NAMES))}")
    penalty_prompt = body.get("penalty_prompt")
    pp_tokens = None
    if penalty_prompt is not None:
        pp_tokens = tokenize_prompt(vocab, penalty_prompt, add_bos=False, field="penalty_prompt")
    seed = get_int(body, "seed", d.seed, lo=-1, hi=0xFFFFFFFF)
    params = SamplingParams(
        temperature=get_float(body, "temperature", d.temperature),
        dynatemp_range=get_float(body, "dynatemp_range", d.dynatemp_range, lo=0.0),
        dynatemp_exponent=get_float(body, "dynatemp_exponent", d.dynatemp_exponent),
        top_k=get_int(body, "top_k", d.top_k, lo=-1 << 31, hi=(1 << 31) - 1),
        top_p=get_float(body, "top_p", d.top_p, lo=0.0, hi=1.0),
        min_p=get_float(body, "min_p", d.min_p, lo=0.0, hi=1.0),
        tfs_z=get_float(body, "tfs_z", d.tfs_z, lo=0.0),
        typical_p=get_float(body, "typical_p", d.typical_p, lo=0.0),
        repeat_penalty=get_float(body, "repeat_penalty", d.repeat_penalty, lo=0.0),
        repeat_last_n=get_int(body, "repeat_last_n", d.repeat_last_n, lo=-1, hi=1 << 20),
        penalize_nl=get_bool(body, "penalize_nl", d.penalize_nl),
        presence_penalty=get_float(body, "presence_penalty", d.presence_penalty),
        frequency_penalty=get_float(body, "frequency_penalty", d.frequency_penalty),
        penalty_prompt=pp_tokens,
        dry_multiplier=get_float(body, "dry_multiplier", d.dry_multiplier, lo=0.0, hi=1e4),
        dry_base=get_float(body, "dry_base", d.dry_base, lo=1.0, hi=1e4),
        dry_allowed_length=get_int(body, "dry_allowed_length", d.dry_allowed_length, lo=0, hi=1 << 20),
        dry_penalty_last_n=get_int(body, "dry_penalty_last_n", d.dry_penalty_last_n, lo=-1, hi=1 << 20),
        dry_sequence_breakers=_dry_sequence_breakers(body, d.dry_sequence_breakers),
        xtc_probability=get_float(body, "xtc_probability", d.xtc_probability, lo=0.0, hi=1.0),
        xtc_threshold=get_float(body, "xtc_threshold", d.xtc_threshold, lo=0.0, hi=1.0),
        top_n_sigma=get_float(body, "top_n_sigma", d.top_n_sigma, lo=-1.0, hi=1e4),
        mirostat=get_int(body, "mirostat", d.mirostat, lo=0, hi=2),
        mirostat_tau=get_float(body, "mirostat_tau", d.mirostat_tau, lo=0.0),
        mirostat_eta=get_float(body, "mirostat_eta", d.mirostat_eta, lo=0.0),
        grammar=get_str(body, "grammar", d.grammar),
        seed=seed,
        ignore_eos=get_bool(body, "ignore_eos", d.ignore_eos),
        logit_bias=_logit_bias(vocab, body.get("logit_bias")),
        n_probs=get_int(body, "n_probs", d.n_probs, lo=0, hi=vocab.n_vocab),
        min_keep=get_int(body, "min_keep", d.min_keep, lo=0, hi=vocab.n_vocab),
        samplers=tuple(samplers),
    )
    if not named:
        params.samplers = params.default_samplers()
    return params


def parse_completion(body: Any, vocab, *, add_bos: bool, n_predict_default: int = -1,
                     grammar_from_schema=None, sampling_defaults: SamplingParams | None = None,
                     vision=None) -> CompletionParams:
    """Validate a /completion body. ``grammar_from_schema`` turns ``json_schema`` into GBNF;
    ``vision`` (api.images.Vision, with --mmproj) takes ``image_data``."""
    body = require_object(body)
    if "prompt" not in body:
        raise InvalidRequestError("'prompt' is required")
    prompt = body["prompt"]
    with_images = tokenize_with_images(vision, body, prompt, add_bos=add_bos)
    tokens, media = with_images or (tokenize_prompt(vocab, prompt, add_bos=add_bos), None)
    sampling = parse_sampling(body, vocab, sampling_defaults)
    schema = body.get("json_schema")
    if schema is not None and not sampling.grammar:
        if grammar_from_schema is None:
            raise InvalidRequestError("'json_schema' is not supported by this server")
        sampling.grammar = grammar_from_schema(schema)
    return CompletionParams(
        prompt_tokens=tokens,
        sampling=sampling,
        n_predict=get_int(body, "n_predict", n_predict_default, lo=-1, hi=1 << 24),
        n_keep=get_int(body, "n_keep", 0, lo=-1, hi=1 << 24),
        stop=get_str_list(body, "stop", max_items=1 << 16),   # the configured limit is checked after parsing
        stream=get_bool(body, "stream", False),
        cache_prompt=get_bool(body, "cache_prompt", False),
        id_slot=get_int(body, "id_slot", get_int(body, "slot_id", -1, lo=-1), lo=-1),
        prompt=prompt, return_progress=get_bool(body, "return_progress", False),
        media=media,
    )


def effective_n_predict(requested: int, server_limit: int) -> int:
    """The number of tokens a request may generate: its own ``n_predict``, capped by the
    server's ``-n`` (-1 on either side means no limit from that side)."""
    if server_limit < 0:
        return requested
    return server_limit if requested < 0 else min(requested, server_limit)


def generation_settings(p: CompletionParams | None, *, model: str, n_ctx: int, n_predict: int = -1,
                        defaults: SamplingParams | None = None) -> dict:
    """The spec's generation_settings object (also /props' default_generation_settings); with
    no request, the server's defaults."""
    s = p.sampling if p else (defaults or SamplingParams())
    return {
        "n_ctx": n_ctx, "n_predict": p.n_predict if p else n_predict, "model": model, "seed": s.seed,
        "temperature": s.temperature, "dynatemp_range": s.dynatemp_range, "dynatemp_exponent": s.dynatemp_exponent,
        "top_k": s.top_k, "top_p": s.top_p, "min_p": s.min_p, "tfs_z": s.tfs_z, "typical_p": s.typical_p,
        "repeat_last_n": s.repeat_last_n, "repeat_penalty": s.repeat_penalty,
        "presence_penalty": s.presence_penalty, "frequency_penalty": s.frequency_penalty,
        "penalty_prompt_tokens": list(s.penalty_prompt or []),
        "use_penalty_prompt_tokens": s.penalty_prompt is not None,
        "top_n_sigma": s.top_n_sigma, "xtc_probability": s.xtc_probability, "xtc_threshold": s.xtc_threshold,
        "dry_multiplier": s.dry_multiplier, "dry_base": s.dry_base, "dry_allowed_length": s.dry_allowed_length,
        "dry_penalty_last_n": s.dry_penalty_last_n, "dry_sequence_breakers": list(s.dry_sequence_breakers),
        "mirostat": s.mirostat, "mirostat_tau": s.mirostat_tau, "mirostat_eta": s.mirostat_eta,
        "penalize_nl": s.penalize_nl, "stop": list(p.stop) if p else [], "n_keep": p.n_keep if p else 0,
        "ignore_eos": s.ignore_eos, "stream": p.stream if p else False,
        "logit_bias": [[t, False if b is None else b] for t, b in s.logit_bias],
        "n_probs": s.n_probs, "min_keep": s.min_keep, "grammar": s.grammar, "samplers": list(s.samplers),
    }


def timings_json(t: Timings) -> dict:
    """The spec's ``timings`` object. The generation rate counts decode steps, as today's
    llama-server does: the first token comes from the prompt's last batch, so ``predicted_ms``
    (from the end of the prompt to the last token) covers ``predicted_n - 1`` steps."""
    n_steps = max(t.n_predicted - 1, 0)
    return {
        "cache_n": t.n_cache, "prompt_n": t.n_prompt, "prompt_ms": t.prompt_ms,
        "prompt_per_token_ms": t.prompt_ms / t.n_prompt if t.n_prompt else 0.0,
        "prompt_per_second": 1e3 * t.n_prompt / t.prompt_ms if t.prompt_ms > 0 and t.n_prompt else 0.0,
        "predicted_n": t.n_predicted, "predicted_ms": t.predicted_ms,
        "predicted_per_token_ms": t.predicted_ms / n_steps if n_steps else 0.0,
        "predicted_per_second": 1e3 / t.predicted_ms * n_steps if t.predicted_ms > 0 and n_steps else 0.0,
    }


def slot_json(snap: SlotSnapshot, *, model: str, n_predict: int, defaults: SamplingParams | None = None) -> dict:
    """One /slots entry: the request's generation settings (the defaults while idle) and its progress."""
    p = snap.params if isinstance(snap.params, CompletionParams) else None
    return {
        **generation_settings(p, model=model, n_ctx=snap.n_ctx, n_predict=n_predict, defaults=defaults),
        "id": snap.id, "task_id": snap.task_id, "state": int(snap.is_processing), "is_processing": snap.is_processing,
        "n_ctx": snap.n_ctx,
        "prompt": p.prompt if p is not None else "",
        "next_token": {"has_next_token": snap.has_next_token, "n_remain": snap.n_remain, "n_decoded": snap.n_decoded,
                       "stopped_eos": False, "stopped_limit": False, "stopped_word": False, "stopping_word": ""},
    }


def token_pieces(tokens: list[int], pieces: list[bytes]) -> list[dict]:
    """/tokenize ``with_pieces``: each token as ``{"id", "piece"}``, the piece as text when it is
    valid UTF-8 on its own, else as its bytes (a token can hold part of a character)."""
    out = []
    for token, piece in zip(tokens, pieces):
        try:
            text: str | list[int] = piece.decode("utf-8")
        except UnicodeDecodeError:
            text = list(piece)
        out.append({"id": token, "piece": text})
    return out


def _probs_json(vocab_pieces, probs: list[TokenProbs]) -> list[dict]:
    return [{"content": tp.piece.decode("utf-8", "replace"),
             "probs": [{"tok_str": vocab_pieces[t].decode("utf-8", "replace"), "prob": pr} for t, pr in tp.probs]}
            for tp in probs]


def partial_json(ev: Partial, pieces, id_slot: int, options: ResponseOptions = ResponseOptions()) -> dict:
    """A streamed piece: the spec's ``content`` and ``stop`` (with ``id_slot``); the piece's token
    ids only with ``return_tokens`` (the spec: "only content and stop will be returned until end
    of completion")."""
    out = {"content": ev.content, "stop": False, "id_slot": id_slot, "multimodal": False}
    if options.return_tokens:
        out["tokens"] = ev.tokens
    if ev.probs:
        out["completion_probabilities"] = _probs_json(pieces, ev.probs)
    return out


def stop_type(ev: Final) -> str:
    return "eos" if ev.stopped_eos else "word" if ev.stopped_word else "limit" if ev.stopped_limit else "none"


def final_json(ev: Final, p: CompletionParams, pieces, *, model: str, n_ctx: int, stream: bool,
               options: ResponseOptions = ResponseOptions()) -> dict:
    out = {
        "index": 0,
        "content": "" if stream else ev.content,
        "tokens": list(ev.tokens) if options.return_tokens and not stream else [],
        "id_slot": ev.id_slot,
        "stop": True,
        "model": model,
        "tokens_predicted": ev.tokens_predicted,
        "tokens_evaluated": ev.tokens_evaluated,
        "generation_settings": generation_settings(p, model=model, n_ctx=n_ctx),
        "prompt": p.prompt,
        "truncated": ev.truncated,
        "stopped_eos": ev.stopped_eos,
        "stopped_word": ev.stopped_word,
        "stopped_limit": ev.stopped_limit,
        "stopping_word": ev.stopping_word,
        "stop_type": stop_type(ev),
        "has_new_line": "\n" in ev.content,
        "tokens_cached": ev.tokens_cached,
        "timings": timings_json(ev.timings),
    }
    if p.sampling.n_probs > 0 and not stream:
        out["completion_probabilities"] = _probs_json(pieces, ev.probs)
    if options.response_fields:
        return pick_fields(out, options.response_fields)
    return out
