"""OpenAI-compatible shapes: chat/completions and completions requests → CompletionParams,
results → OpenAI's response and chunk objects. Pure functions, no I/O."""
from __future__ import annotations

import dataclasses
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

from llamacy import __version__
from llamacy.api.chat import ChatDelta, ChatMessage, ChatOptions, ChatPrompt, OutputSpec, render_chat
from llamacy.api.completion import parse_sampling, timings_json, tokenize_prompt
from llamacy.api.fields import get_bool, get_int, get_str, get_str_list, require_object
from llamacy.api.images import chat_images
from llamacy.api.limits import DEFAULT_LIMITS
from llamacy.api.reasoning import REASONING_FORMATS
from llamacy.api.tool_calls import ChatTools, ToolCall, ToolSpec
from llamacy.engine.sampling_params import SamplingParams
from llamacy.errors import InvalidRequestError
from llamacy.serving.tasks import CompletionParams, Final, TokenProbs


def _n_predict(body: dict, default: int) -> int:
    for name in ("max_completion_tokens", "max_tokens", "n_predict"):
        if body.get(name) is not None:
            return get_int(body, name, default, lo=-1, hi=1 << 24)
    return default


MAX_CHOICES = 16
SYSTEM_FINGERPRINT = f"b{__version__}-llamacy"     # clients read a build id starting with "b"


def include_usage(body: dict) -> bool:
    """``stream_options.include_usage``: a last chunk with the usage of the whole request."""
    options = body.get("stream_options")
    if options is None:
        return False
    return get_bool(require_object(options, "'stream_options'"), "include_usage", False)


def function_tool(i: int, name: Any, description: Any, parameters: Any, field: str) -> dict:
    """A tool of another API (Anthropic, Responses) as a chat/completions ``tools`` entry;
    ``field`` names where its JSON Schema came from, for the error message."""
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidRequestError(f"tools[{i}].{field} must be a JSON Schema object")
    fn = {"name": name, "parameters": parameters or {"type": "object", "properties": {}}}
    if description is not None:
        fn["description"] = description
    return {"type": "function", "function": fn}


def parse_n(body: dict) -> int:
    """``n``: how many choices (each generated as a request of its own)."""
    return get_int(body, "n", 1, lo=1, hi=MAX_CHOICES)


def choice_params(params: CompletionParams, n: int) -> list[CompletionParams]:
    """The requests for ``n`` choices: copies of ``params``, the i-th with seed + i (as
    llama-server; a random seed stays random)."""
    out = [params]
    for i in range(1, n):
        sampling = dataclasses.replace(params.sampling, logit_bias=list(params.sampling.logit_bias))
        if sampling.seed >= 0:
            sampling.seed = (sampling.seed + i) & 0xFFFFFFFF
        out.append(dataclasses.replace(params, sampling=sampling, stop=list(params.stop)))
    return out


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


@dataclass(frozen=True)
class ChatDefaults:
    """Server-wide chat settings a request may override (--reasoning-format, --reasoning-budget)."""

    reasoning_format: str = "deepseek"
    enable_thinking: bool = True
    max_schema_depth: int = DEFAULT_LIMITS.max_schema_depth
    prefill_assistant: bool = True       # --no-prefill-assistant: a trailing assistant turn is a whole turn


@dataclass
class ChatRequest:
    """A validated chat/completions request: what to run and how to read its output."""

    params: CompletionParams
    output: OutputSpec


def parse_tools(body: dict) -> ChatTools | None:
    """``tools``, ``tool_choice`` and ``parallel_tool_calls`` → ChatTools (None: no tools)."""
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise InvalidRequestError("'functions' and 'function_call' are deprecated: use 'tools' and 'tool_choice'")
    raw = body.get("tools")
    choice = body.get("tool_choice")
    parallel = get_bool(body, "parallel_tool_calls", True)
    if raw is None or raw == []:
        if choice not in (None, "none", "auto"):
            raise InvalidRequestError("'tool_choice' needs 'tools'")
        return None
    if not isinstance(raw, list):
        raise InvalidRequestError("'tools' must be an array")
    specs = []
    for i, tool in enumerate(raw):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
            raise InvalidRequestError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{...}}}}")
        if not isinstance(fn.get("name"), str):
            raise InvalidRequestError(f"tools[{i}].function.name must be a string")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise InvalidRequestError(f"tools[{i}].function.parameters must be a JSON Schema object")
        description = fn.get("description")
        description = "" if description is None else description
        if not isinstance(description, str):
            raise InvalidRequestError(f"tools[{i}].function.description must be a string")
        specs.append(ToolSpec(fn["name"], description, params))
    function = None
    if choice is None:
        choice = "auto"
    elif isinstance(choice, dict):
        fn = choice.get("function")
        if choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequestError('\'tool_choice\' object must be {"type": "function", "function": {"name": ...}}')
        choice, function = "function", fn["name"]
    elif choice not in ("auto", "none", "required"):
        raise InvalidRequestError(f"'tool_choice' must be auto, none, required or a function, got {str(choice)[:40]!r}")
    if choice == "none":
        return None
    return ChatTools(tuple(specs), choice=choice, function=function, parallel=parallel)


def chat_options(body: dict, defaults: ChatDefaults) -> ChatOptions:
    """The request's tools and reasoning settings."""
    reasoning_format = get_str(body, "reasoning_format", defaults.reasoning_format)
    if reasoning_format not in REASONING_FORMATS:
        raise InvalidRequestError(f"'reasoning_format' must be one of {', '.join(REASONING_FORMATS)}")
    kwargs = body.get("chat_template_kwargs")
    kwargs = {} if kwargs is None else kwargs
    if not isinstance(kwargs, dict):
        raise InvalidRequestError("'chat_template_kwargs' must be an object")
    kwargs = {k: v for k, v in kwargs.items() if k not in ("messages", "tools", "add_generation_prompt")}
    enable_thinking = defaults.enable_thinking
    if "enable_thinking" in kwargs:
        if not isinstance(kwargs["enable_thinking"], bool):
            raise InvalidRequestError("'chat_template_kwargs.enable_thinking' must be a boolean")
        enable_thinking = kwargs.pop("enable_thinking")
    return ChatOptions(tools=parse_tools(body), reasoning_format=reasoning_format,
                       enable_thinking=enable_thinking, template_kwargs=kwargs,
                       max_schema_depth=defaults.max_schema_depth,
                       add_generation_prompt=get_bool(body, "add_generation_prompt", True),
                       continue_final=_continue_final(body.get("continue_final_message")),
                       prefill_assistant=defaults.prefill_assistant)


def _continue_final(value: Any) -> str | None:
    """``continue_final_message``: true (continue what the last message holds), "content",
    "reasoning_content"; false or null: no."""
    if value is None or value is False:
        return None
    if value is True:
        return "auto"
    if value in ("content", "reasoning_content"):
        return value
    raise InvalidRequestError("'continue_final_message' must be a boolean, \"content\" or \"reasoning_content\"")


def chat_prompt(body: Any, chat_template, defaults: ChatDefaults) -> ChatPrompt:
    """``messages`` (+ tools and thinking options) rendered with the chat template."""
    body = require_object(body)
    return render_chat(chat_template, body.get("messages"), chat_options(body, defaults))


def parse_chat(body: Any, vocab, chat_template, *, add_bos: bool, grammar_from_schema,
               defaults: ChatDefaults = ChatDefaults(), sampling_defaults: SamplingParams | None = None,
               vision=None) -> ChatRequest:
    """``vision`` (api.images.Vision, with --mmproj) takes ``image_url`` content parts."""
    body = require_object(body)
    parse_n(body)
    messages, images = chat_images(body.get("messages"), vision)
    chat = render_chat(chat_template, messages, chat_options(body, defaults))
    params = _params(body, vocab, chat.prompt, add_bos=add_bos, grammar_from_schema=grammar_from_schema, chat=True,
                     sampling_defaults=sampling_defaults)
    if images:
        params.prompt_tokens, params.media = vision.tokenize(chat.prompt, images, add_special=add_bos)
    if chat.grammar:
        if params.sampling.grammar:
            raise InvalidRequestError("this 'tool_choice' constrains the output to tool calls: it can't be combined "
                                      "with 'grammar', 'json_schema' or 'response_format'")
        params.sampling.grammar = chat.grammar
    return ChatRequest(params=params, output=chat.output)


def parse_completions(body: Any, vocab, *, add_bos: bool, grammar_from_schema,
                      sampling_defaults: SamplingParams | None = None) -> CompletionParams:
    body = require_object(body)
    if "prompt" not in body:
        raise InvalidRequestError("'prompt' is required")
    parse_n(body)
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # OpenAI's batch form with a single prompt
    if isinstance(prompt, list) and any(isinstance(p, list) for p in prompt):
        raise InvalidRequestError("'prompt' with several prompts is not supported: send one per request")
    return _params(body, vocab, prompt, add_bos=add_bos, grammar_from_schema=grammar_from_schema, chat=False,
                   sampling_defaults=sampling_defaults)


def _params(body: dict, vocab, prompt, *, add_bos: bool, grammar_from_schema, chat: bool,
            sampling_defaults: SamplingParams | None = None) -> CompletionParams:
    tokens = tokenize_prompt(vocab, prompt, add_bos=add_bos)
    sampling = parse_sampling(body, vocab, sampling_defaults)
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
        id_slot=get_int(body, "id_slot", -1, lo=-1), prompt=prompt,
        return_progress=get_bool(body, "return_progress", False))


# --- responses ---------------------------------------------------------------------------

def new_id(prefix: str, sep: str = "-") -> str:
    return f"{prefix}{sep}{secrets.token_hex(12)}"


def finish_reason(ev: Final) -> str:
    return "length" if ev.stopped_limit else "stop"


def usage(finals: list[Final]) -> dict:
    """Usage of the choices of one request: one prompt, every choice's tokens."""
    first = finals[0]
    completion = sum(ev.tokens_predicted for ev in finals)
    return {"prompt_tokens": first.tokens_evaluated, "completion_tokens": completion,
            "total_tokens": first.tokens_evaluated + completion,
            "prompt_tokens_details": {"cached_tokens": first.timings.n_cache}}


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


def tool_calls_json(calls: list[ToolCall], first_index: int | None = None) -> list[dict]:
    """OpenAI's ``tool_calls``; with ``first_index`` the streaming form (each call has an ``index``)."""
    out = []
    for i, call in enumerate(calls):
        item = {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        if first_index is not None:
            item = {"index": first_index + i, **item}
        out.append(item)
    return out


def chat_finish_reason(ev: Final, message: ChatMessage) -> str:
    return "tool_calls" if message.tool_calls else finish_reason(ev)


def chat_choice(index: int, ev: Final, message: ChatMessage, *, n_probs: int, pieces) -> dict:
    msg: dict = {"role": "assistant", "content": message.content}
    if message.reasoning_content is not None:
        msg["reasoning_content"] = message.reasoning_content
    if message.tool_calls:
        msg["tool_calls"] = tool_calls_json(message.tool_calls)
    return {"index": index, "message": msg, "finish_reason": chat_finish_reason(ev, message),
            "logprobs": chat_logprobs(ev.probs, pieces) if n_probs else None}


def chat_response(finals: list[Final], choices: list[dict], *, id: str, model: str) -> dict:
    return {"id": id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, "usage": usage(finals),
            "timings": timings_json(finals[0].timings)}


def chat_delta(delta: ChatDelta, first_call_index: int) -> dict:
    """One chunk's ``delta`` for a piece of parsed output."""
    out: dict = {}
    if delta.reasoning:
        out["reasoning_content"] = delta.reasoning
    if delta.content:
        out["content"] = delta.content
    if delta.tool_calls:
        out["tool_calls"] = tool_calls_json(delta.tool_calls, first_call_index)
    return out


def chat_chunk(*, id: str, model: str, created: int, delta: dict, finish: str | None = None,
               logprobs: dict | None = None, index: int = 0) -> dict:
    return {"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": index, "delta": delta, "finish_reason": finish, "logprobs": logprobs}]}


def completions_choice(index: int, ev: Final, *, n_probs: int, pieces) -> dict:
    return {"index": index, "text": ev.content, "finish_reason": finish_reason(ev),
            "logprobs": completion_logprobs(ev.probs, pieces) if n_probs else None}


def completions_response(finals: list[Final], choices: list[dict], *, id: str, model: str) -> dict:
    return {"id": id, "object": "text_completion", "created": int(time.time()), "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT, "choices": choices, "usage": usage(finals),
            "timings": timings_json(finals[0].timings)}


def completions_chunk(*, id: str, model: str, created: int, text: str, finish: str | None = None,
                      logprobs: dict | None = None, index: int = 0) -> dict:
    return {"id": id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [{"index": index, "text": text, "finish_reason": finish, "logprobs": logprobs}]}


def models_list(model_id: str, *, n_ctx_train: int, n_vocab: int, n_params: int, size: int,
                vision: bool = False, aliases: list[str] = (), tags: list[str] = ()) -> dict:
    """``capabilities`` as llama.cpp names them: "multimodal" when the model accepts images (--mmproj)."""
    return {"object": "list", "data": [{
        "id": model_id, "object": "model", "created": int(time.time()), "owned_by": "llamacy",
        "aliases": list(aliases), "tags": list(tags),
        "capabilities": ["completion", "multimodal"] if vision else ["completion"],
        "meta": {"n_ctx_train": n_ctx_train, "n_vocab": n_vocab, "n_params": n_params, "size": size}}]}
