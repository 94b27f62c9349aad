"""The OpenAPI 3.1 description of the whole HTTP API, served at GET /openapi.json.

Written here by hand, next to the parsers it describes; tests keep it true: every route of the
application is described (and nothing else), real responses validate against the schemas,
and a property-based fuzzer generates requests from it. Request schemas give the types and
bounds the parsers enforce; unknown fields are ignored by the server, so they are allowed.
"""
from __future__ import annotations

from typing import Any

from llamacy.engine.sampling_params import FULL_ORDER

JSON = "application/json"
SSE = "text/event-stream"

_INT = {"type": "integer"}
_NUM = {"type": "number"}
_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_TOKEN = {"type": "integer", "minimum": 0}


def _obj(props: dict, required: tuple = (), **extra) -> dict:
    out = {"type": "object", "properties": props, **extra}
    if required:
        out["required"] = list(required)
    return out


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _arr(items: dict, **extra) -> dict:
    return {"type": "array", "items": items, **extra}


PROMPT = {"anyOf": [_STR, _arr({"anyOf": [_STR, _TOKEN]})]}
# /completion also takes today's prompt object and several prompts (one result each)
PROMPT_OBJECT = {"type": "object", "properties": {"prompt_string": _STR, "multimodal_data": _arr(_STR)},
                 "required": ["prompt_string"]}
# /v1/completions: one prompt (today's prompt object, or OpenAI's batch of one)
OPENAI_PROMPT = {"anyOf": [_STR, PROMPT_OBJECT, _arr({"anyOf": [_STR, _TOKEN, _arr({"anyOf": [_STR, _TOKEN]})]})]}
PROMPTS = {"anyOf": [_STR, PROMPT_OBJECT,
                     _arr({"anyOf": [_STR, _TOKEN, PROMPT_OBJECT, _arr({"anyOf": [_STR, _TOKEN]})]})]}
STOP = {"anyOf": [_STR, _arr(_STR)]}
LOGIT_BIAS = {"anyOf": [
    _arr({"type": "array", "prefixItems": [{"anyOf": [_TOKEN, _STR]}, {"anyOf": [_NUM, {"const": False}]}],
          "minItems": 2, "maxItems": 2}),
    {"type": "object", "additionalProperties": {"anyOf": [_NUM, {"const": False}]}},
]}

SAMPLING = {
    "temperature": _NUM, "dynatemp_range": {"type": "number", "minimum": 0}, "dynatemp_exponent": _NUM,
    "top_k": _INT, "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "min_p": {"type": "number", "minimum": 0, "maximum": 1}, "tfs_z": {"type": "number", "minimum": 0},
    "typical_p": {"type": "number", "minimum": 0}, "repeat_penalty": {"type": "number", "minimum": 0},
    "repeat_last_n": {"type": "integer", "minimum": -1}, "penalize_nl": _BOOL, "presence_penalty": _NUM,
    "frequency_penalty": _NUM, "penalty_prompt": PROMPT, "mirostat": {"type": "integer", "enum": [0, 1, 2]},
    "mirostat_tau": {"type": "number", "minimum": 0}, "mirostat_eta": {"type": "number", "minimum": 0},
    "grammar": _STR, "json_schema": {"type": ["object", "boolean"]},
    "seed": {"type": "integer", "minimum": -1, "maximum": 0xFFFFFFFF}, "ignore_eos": _BOOL,
    "logit_bias": LOGIT_BIAS, "n_probs": {"type": "integer", "minimum": 0}, "min_keep": {"type": "integer", "minimum": 0},
    "samplers": _arr({"enum": list(FULL_ORDER)}),
    "top_n_sigma": {"type": "number", "minimum": -1}, "xtc_probability": {"type": "number", "minimum": 0, "maximum": 1},
    "xtc_threshold": {"type": "number", "minimum": 0, "maximum": 1},
    "dry_multiplier": {"type": "number", "minimum": 0}, "dry_base": {"type": "number", "minimum": 1},
    "dry_allowed_length": {"type": "integer", "minimum": 0}, "dry_penalty_last_n": {"type": "integer", "minimum": -1},
    "dry_sequence_breakers": _arr({"type": "string", "minLength": 1, "maxLength": 40}, minItems=1, maxItems=16),
}
# images (--mmproj): each named in the prompt by an [img-ID] marker
IMAGE_DATA = _arr(_obj({"data": {"type": "string", "contentEncoding": "base64"},
                        "id": {"type": "integer", "minimum": 0, "maximum": 999999999}}, ("data", "id")), maxItems=16)
COMPLETION_OPTIONS = {
    **SAMPLING, "image_data": IMAGE_DATA,
    "n_predict": {"type": "integer", "minimum": -1}, "n_keep": {"type": "integer", "minimum": -1},
    "stop": STOP, "stream": _BOOL, "cache_prompt": _BOOL, "id_slot": {"type": "integer", "minimum": -1},
    "system_prompt": _obj({"prompt": _STR, "anti_prompt": _STR, "assistant_name": _STR}),
}
# today's llama-server options on how results are shown (none changes what is generated;
# ``response_fields`` is left out: a result cut to some fields follows no fixed schema)
RESPONSE_OPTIONS = {"return_tokens": _BOOL, "return_progress": _BOOL, "timings_per_token": _BOOL}

GENERATION_SETTINGS = _obj({
    "n_ctx": _INT, "n_predict": _INT, "model": _STR, "seed": _INT, "temperature": _NUM, "top_k": _INT,
    "top_p": _NUM, "min_p": _NUM, "tfs_z": _NUM, "typical_p": _NUM, "repeat_last_n": _INT, "repeat_penalty": _NUM,
    "presence_penalty": _NUM, "frequency_penalty": _NUM, "mirostat": _INT, "mirostat_tau": _NUM,
    "mirostat_eta": _NUM, "penalize_nl": _BOOL, "stop": _arr(_STR), "n_keep": _INT, "ignore_eos": _BOOL,
    "stream": _BOOL, "n_probs": _INT, "min_keep": _INT, "grammar": _STR, "samplers": _arr(_STR),
}, ("n_ctx", "n_predict", "model", "seed", "temperature", "samplers"))

TIMINGS = _obj({k: _NUM for k in ("cache_n", "prompt_n", "prompt_ms", "prompt_per_token_ms", "prompt_per_second",
                                  "predicted_n", "predicted_ms", "predicted_per_token_ms", "predicted_per_second")},
               ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms"))
PROBS = _arr(_obj({"content": _STR, "probs": _arr(_obj({"tok_str": _STR, "prob": _NUM}, ("tok_str", "prob")))},
                  ("content", "probs")))
COMPLETION_RESULT = _obj({
    "content": _STR, "id_slot": _INT, "stop": {"const": True}, "model": _STR, "tokens_predicted": _INT,
    "tokens_evaluated": _INT, "generation_settings": GENERATION_SETTINGS, "prompt": {},
    "truncated": _BOOL, "stopped_eos": _BOOL, "stopped_word": _BOOL, "stopped_limit": _BOOL,
    "stopping_word": _STR, "tokens_cached": _INT, "timings": TIMINGS, "completion_probabilities": PROBS,
}, ("content", "id_slot", "stop", "model", "tokens_predicted", "tokens_evaluated", "generation_settings",
    "truncated", "stopped_eos", "stopped_word", "stopped_limit", "stopping_word", "tokens_cached", "timings"))

TEXT_PART = _obj({"type": {"const": "text"}, "text": _STR}, ("type", "text"))
IMAGE_PART = _obj({"type": {"const": "image_url"},      # a data: URL (base64); remote URLs are refused
                   "image_url": _obj({"url": {"type": "string", "pattern": "^data:"}}, ("url",))},
                  ("type", "image_url"))
MESSAGE = _obj({"role": _STR, "content": {"anyOf": [_STR, {"type": "null"}, _arr({"anyOf": [TEXT_PART, IMAGE_PART]})]},
                "tool_calls": {"anyOf": [_arr({"type": "object"}), {"type": "null"}]}, "tool_call_id": {},
                "name": {}},
               ("role",))
TOOL_CALL = _obj({"id": _STR, "type": {"const": "function"},
                  "function": _obj({"name": _STR, "arguments": _STR}, ("name", "arguments"))},
                 ("id", "type", "function"))
RESPONSE_MESSAGE = _obj({**MESSAGE["properties"], "reasoning_content": _STR, "tool_calls": _arr(TOOL_CALL)}, ("role",))
TOOL = _obj({"type": {"const": "function"}, "function": _obj({
    "name": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
    "description": {"type": ["string", "null"]}, "parameters": {"type": "object"}}, ("name",))}, ("function",))
TEXT_PARTS_INPUT = _obj({"content": _arr(TEXT_PART, minItems=1)}, ("content",))
CHAT_TEMPLATE_OPTIONS = {
    "tools": _arr(TOOL, maxItems=128),
    "tool_choice": {"anyOf": [{"enum": ["auto", "none", "required"]}, _obj(
        {"type": {"const": "function"}, "function": _obj({"name": _STR}, ("name",))}, ("type", "function"))]},
    "parallel_tool_calls": _BOOL,
    "reasoning_format": {"enum": ["none", "deepseek"]},
    "chat_template_kwargs": _obj({"enable_thinking": _BOOL}),
    "add_generation_prompt": _BOOL,
    "continue_final_message": {"anyOf": [_BOOL, {"enum": ["content", "reasoning_content"]}]},
}
USAGE = _obj({"prompt_tokens": _INT, "completion_tokens": _INT, "total_tokens": _INT},
             ("prompt_tokens", "completion_tokens", "total_tokens"))
OPENAI_OPTIONS = {
    **SAMPLING, "model": _STR, "stream": _BOOL, "stop": STOP, "max_tokens": {"type": "integer", "minimum": -1},
    "max_completion_tokens": {"type": "integer", "minimum": -1}, "n": {"type": "integer", "minimum": 1, "maximum": 16},
    "stream_options": _obj({"include_usage": _BOOL}), "cache_prompt": _BOOL,
    "response_format": _obj({"type": {"enum": ["text", "json_object", "json_schema"]},
                             "schema": {}, "json_schema": {}}, ("type",)),
    **RESPONSE_OPTIONS, "verbose": _BOOL,
}
CHAT_RESPONSE = _obj({
    "id": _STR, "object": {"const": "chat.completion"}, "created": _INT, "model": _STR,
    "choices": _arr(_obj({"index": _INT, "message": RESPONSE_MESSAGE, "finish_reason": _STR,
                          "logprobs": {"type": ["object", "null"]}}, ("index", "message", "finish_reason"))),
    "usage": USAGE, "timings": TIMINGS,
}, ("id", "object", "created", "model", "choices", "usage"))
COMPLETIONS_RESPONSE = _obj({
    "id": _STR, "object": {"const": "text_completion"}, "created": _INT, "model": _STR,
    "choices": _arr(_obj({"index": _INT, "text": _STR, "finish_reason": _STR,
                          "logprobs": {"type": ["object", "null"]}}, ("index", "text", "finish_reason"))),
    "usage": USAGE,
}, ("id", "object", "created", "model", "choices", "usage"))

SLOT = _obj({"id": _INT, "task_id": _INT, "state": {"enum": [0, 1]}, "n_ctx": _INT, "prompt": {},
             "next_token": _obj({"has_next_token": _BOOL, "n_remain": _INT, "n_decoded": _INT},
                                ("has_next_token", "n_remain", "n_decoded"))},
            ("id", "task_id", "state", "n_ctx", "next_token"))
HEALTH = _obj({"status": {"enum": ["ok", "no slot available", "loading model", "error"]},
               "slots_idle": _INT, "slots_processing": _INT, "slots": _arr(SLOT), "error": _STR}, ("status",))
SSE_EVENT = _obj({"data": _STR, "event": _STR, "id": _STR}, ("data",))   # each event; data is JSON or [DONE]
ERROR = _obj({"error": _obj({"code": _INT, "message": _STR, "type": _STR}, ("code", "message", "type"))}, ("error",))
VECTOR = _arr(_NUM)
INPUT_TOKENS = _obj({"input_tokens": _INT}, ("input_tokens",))

# Anthropic's Messages API (only what the converter enforces: unknown block types get a 400)
ANTHROPIC_MESSAGE = _obj({"role": {"enum": ["user", "assistant"]},
                          "content": {"anyOf": [_STR, _arr({"type": "object"})]}}, ("role", "content"))
# what count_tokens reads (the prompt); a Messages request adds the generation options
ANTHROPIC_PROMPT = {
    "messages": _arr(ANTHROPIC_MESSAGE), "system": {"anyOf": [_STR, _arr({"type": "object"})]},
    "tools": _arr(_obj({"name": _STR, "description": _STR, "input_schema": {"type": "object"}}, ("name",))),
    "thinking": _obj({"type": {"enum": ["enabled", "disabled", "adaptive"]}}, ("type",)),
}
ANTHROPIC_REQUEST = _obj({
    **ANTHROPIC_PROMPT, "model": _STR, "max_tokens": {"type": "integer", "minimum": -1}, "stream": _BOOL,
    "stop_sequences": STOP, "temperature": _NUM, "top_k": _INT, "top_p": {"type": "number", "minimum": 0, "maximum": 1},
}, ("messages",))
ANTHROPIC_RESPONSE = _obj({
    "id": _STR, "type": {"const": "message"}, "role": {"const": "assistant"}, "model": _STR,
    "content": _arr(_obj({"type": {"enum": ["text", "thinking", "tool_use"]}}, ("type",))),
    "stop_reason": {"enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use"]},
    "stop_sequence": {"type": ["string", "null"]},
    "usage": _obj({"input_tokens": _INT, "output_tokens": _INT}, ("input_tokens", "output_tokens")),
}, ("id", "type", "role", "model", "content", "stop_reason", "usage"))

# OpenAI's Responses API
# what input_tokens reads (the prompt); a Responses request adds the generation options
RESPONSES_PROMPT = {
    "input": {"anyOf": [_STR, _arr({"type": "object"})]}, "instructions": _STR,
    "max_output_tokens": {"type": "integer", "minimum": -1},
    "tools": _arr(_obj({"type": {"const": "function"}, "name": _STR, "description": _STR,
                        "parameters": {"type": "object"}}, ("type", "name"))),
}
RESPONSES_REQUEST = _obj({**RESPONSES_PROMPT, "model": _STR, "stream": _BOOL, "temperature": _NUM,
                          "top_p": {"type": "number", "minimum": 0, "maximum": 1}}, ("input",))
RESPONSES_RESPONSE = _obj({
    "id": _STR, "object": {"const": "response"}, "created_at": _INT, "status": _STR, "model": _STR,
    "output": _arr(_obj({"type": {"enum": ["message", "reasoning", "function_call"]}}, ("type",))),
    "usage": _obj({"input_tokens": _INT, "output_tokens": _INT, "total_tokens": _INT},
                  ("input_tokens", "output_tokens", "total_tokens")),
}, ("id", "object", "status", "model", "output"))


def _nullable_options(schema: dict) -> dict:
    """A request object whose optional fields may also be null: the server reads null as absent
    (as llama.cpp does), so a null must not count as invalid."""
    required = set(schema.get("required", ()))
    props = {name: p if name in required else {"anyOf": [p, {"type": "null"}]}
             for name, p in schema.get("properties", {}).items()}
    return {**schema, "properties": props}


def _body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {JSON: {"schema": _nullable_options(schema)}}}


def _responses(ok: dict | None, *, ok_type: str = JSON, stream: bool = False, description: str = "OK") -> dict:
    content = {} if ok is None else {ok_type: {"schema": ok}}
    if stream:
        content[SSE] = {"schema": SSE_EVENT}
    out = {"200": {"description": description, "content": content}}
    out["default"] = {"description": "An error in the spec's format", "content": {JSON: {"schema": _ref("Error")}}}
    return out


def _op(summary: str, responses: dict, *, body: dict | None = None, params: list | None = None,
        tags: tuple = ()) -> dict:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if tags:
        op["tags"] = list(tags)
    return op


def _query(name: str, schema: dict, required: bool = False) -> dict:
    return {"name": name, "in": "query", "required": required, "schema": schema}


def build(*, title: str = "llamacy", version: str = "0") -> dict:
    """The OpenAPI document (a fresh dict each call)."""
    health = {"get": _op("Server health and slot availability", _responses(HEALTH),
                         params=[_query("fail_on_no_slot", _STR), _query("include_slots", _STR)], tags=("native",))}
    completion = {"post": _op(
        "Complete a prompt (the spec's /completion); several prompts give a list of results",
        _responses({"anyOf": [COMPLETION_RESULT, _arr(COMPLETION_RESULT)]}, stream=True),
        body=_body(_obj({"prompt": PROMPTS, **COMPLETION_OPTIONS, **RESPONSE_OPTIONS}, ("prompt",))),
        tags=("native",))}
    chat = {"post": _op(
        "OpenAI chat completion", _responses(CHAT_RESPONSE, stream=True),
        body=_body(_obj({"messages": _arr(MESSAGE, minItems=1), **OPENAI_OPTIONS, **CHAT_TEMPLATE_OPTIONS,
                         "logprobs": _BOOL, "top_logprobs": {"type": "integer", "minimum": 0, "maximum": 20}},
                        ("messages",))), tags=("openai",))}
    apply_template = {"post": _op(
        "The prompt a chat request would run (its messages through the chat template)",
        _responses(_obj({"prompt": _STR}, ("prompt",))),
        body=_body(_obj({"messages": _arr(MESSAGE, minItems=1), **CHAT_TEMPLATE_OPTIONS}, ("messages",))),
        tags=("native",))}
    chat_input_tokens = {"post": _op(
        "How many tokens the prompt of a chat request has (nothing is generated)", _responses(INPUT_TOKENS),
        body=_body(_obj({"messages": _arr(MESSAGE, minItems=1), **CHAT_TEMPLATE_OPTIONS}, ("messages",))),
        tags=("openai",))}
    messages = {"post": _op("Anthropic Messages API", _responses(ANTHROPIC_RESPONSE, stream=True),
                            body=_body(ANTHROPIC_REQUEST), tags=("anthropic",))}
    count_tokens = {"post": _op("Anthropic token count of a Messages request", _responses(INPUT_TOKENS),
                                body=_body(_obj(ANTHROPIC_PROMPT, ("messages",))), tags=("anthropic",))}
    responses = {"post": _op("OpenAI Responses API", _responses(RESPONSES_RESPONSE, stream=True),
                             body=_body(RESPONSES_REQUEST), tags=("openai",))}
    responses_input_tokens = {"post": _op(
        "How many tokens the prompt of a Responses request has", _responses(
            _obj({"object": {"const": "response.input_tokens"}, "input_tokens": _INT}, ("input_tokens",))),
        body=_body(_obj(RESPONSES_PROMPT, ("input",))), tags=("openai",))}
    models = {"get": _op("The served model, OpenAI style", _responses(_obj({
        "object": {"const": "list"}, "data": _arr(_obj({"id": _STR, "object": {"const": "model"}, "created": _INT,
                                                         "owned_by": _STR, "meta": {"type": "object"},
                                                         "capabilities": _arr(_STR)},
                                                        ("id", "object")))}, ("object", "data"))), tags=("openai",))}
    embedding = {"post": _op(
        "Embed text (the spec's /embedding; --embeddings)",
        _responses({"anyOf": [_obj({"embedding": {"anyOf": [VECTOR, _arr(VECTOR)]}}, ("embedding",)),
                              _arr(_obj({"index": _INT, "embedding": {"anyOf": [VECTOR, _arr(VECTOR)]}},
                                        ("index", "embedding")))]}),
        body=_body(_obj({"content": {"anyOf": [PROMPT, _arr(_STR)]}, "image_data": IMAGE_DATA}, ("content",))),
        tags=("native",))}
    rerank = {"post": _op(
        "Score documents against a query (--reranking)",
        _responses({"anyOf": [
            _obj({"model": _STR, "object": _STR, "usage": _obj({"prompt_tokens": _INT, "total_tokens": _INT}),
                  "results": _arr(_obj({"index": _INT, "relevance_score": _NUM}, ("index", "relevance_score")))},
                 ("results",)),
            _arr(_obj({"index": _INT, "score": _NUM, "text": _STR}, ("index", "score")))]}),
        body=_body(_obj({"query": _STR, "documents": _arr(_STR, minItems=1), "texts": _arr(_STR, minItems=1),
                         "top_n": {"type": "integer", "minimum": 1}, "return_text": _BOOL, "model": _STR},
                        ("query",))), tags=("native",))}
    paths = {
        "/health": health,
        "/v1/health": health,
        "/props": {"get": _op("Server properties and default generation settings", _responses(_obj({
            "assistant_name": _STR, "user_name": _STR, "default_generation_settings": GENERATION_SETTINGS,
            "total_slots": _INT, "chat_template": _STR},
            ("assistant_name", "user_name", "default_generation_settings", "total_slots"))), tags=("native",))},
        "/completion": completion,
        "/completions": completion,
        "/tokenize": {"post": _op(
            "Text to token ids (with_pieces: each with its text, or its bytes when not valid UTF-8 alone)",
            _responses(_obj({"tokens": {"anyOf": [_arr(_INT), _arr(_obj(
                {"id": _INT, "piece": {"anyOf": [_STR, _arr({"type": "integer", "minimum": 0, "maximum": 255})]}},
                ("id", "piece")))]}}, ("tokens",))),
            body=_body(_obj({"content": _STR, "add_special": _BOOL, "with_pieces": _BOOL}, ("content",))),
            tags=("native",))},
        "/apply-template": apply_template,
        "/detokenize": {"post": _op("Token ids to text", _responses(_obj({"content": _STR}, ("content",))),
                                    body=_body(_obj({"tokens": _arr(_TOKEN)}), required=False), tags=("native",))},
        "/slots": {"get": _op("Every slot's settings and progress", _responses(_arr(SLOT)), tags=("native",))},
        "/slots/{id_slot}": {"post": _op(
            "Save, restore or erase a slot's KV cache (--slot-save-path)",
            _responses(_obj({"id_slot": _INT, "filename": _STR, "n_saved": _INT, "n_written": _INT,
                             "n_restored": _INT, "n_read": _INT, "n_erased": _INT, "timings": {"type": "object"}},
                            ("id_slot",))),
            params=[{"name": "id_slot", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}},
                    _query("action", {"enum": ["save", "restore", "erase"]}, required=True)],
            body=_body(_obj({"filename": _STR}), required=False), tags=("native",))},
        "/infill": {"post": _op(
            "Code infilling with the model's FIM tokens", _responses(COMPLETION_RESULT, stream=True),
            body=_body(_obj({"input_prefix": _STR, "input_suffix": _STR, "prompt": _STR,
                             "input_extra": _arr(_obj({"filename": _STR, "text": _STR}, ("text",)), maxItems=256),
                             **COMPLETION_OPTIONS})),
            tags=("native",))},
        "/v1/chat/completions": chat,
        "/chat/completions": chat,
        "/v1/chat/completions/input_tokens": chat_input_tokens,
        "/chat/completions/input_tokens": chat_input_tokens,
        "/v1/messages": messages,
        "/v1/messages/count_tokens": count_tokens,
        "/v1/responses": responses,
        "/responses": responses,
        "/v1/responses/input_tokens": responses_input_tokens,
        "/responses/input_tokens": responses_input_tokens,
        "/v1/completions": {"post": _op(
            "OpenAI completion", _responses(COMPLETIONS_RESPONSE, stream=True),
            body=_body(_obj({"prompt": OPENAI_PROMPT, **OPENAI_OPTIONS, "logprobs": {"type": "integer", "minimum": 0,
                                                                              "maximum": 20}},
                            ("prompt",))), tags=("openai",))},
        "/v1/models": models,
        "/models": models,
        "/embedding": embedding,
        "/embeddings": embedding,
        "/v1/embeddings": {"post": _op(
            "OpenAI embeddings (--embeddings)",
            _responses(_obj({"object": {"const": "list"}, "model": _STR, "usage": _obj(
                {"prompt_tokens": _INT, "total_tokens": _INT}, ("prompt_tokens", "total_tokens")),
                "data": _arr(_obj({"object": {"const": "embedding"}, "index": _INT,
                                   "embedding": {"anyOf": [VECTOR, _STR]}}, ("object", "index", "embedding")))},
                ("object", "data", "usage"))),
            body=_body(_obj({"input": {"anyOf": [_STR, _arr(_STR, minItems=1), _arr(_TOKEN, minItems=1),
                                                 _arr(_arr(_TOKEN), minItems=1), TEXT_PARTS_INPUT,
                                                 _arr(TEXT_PARTS_INPUT, minItems=1)]},
                             "encoding_format": {"enum": ["float", "base64"]}, "model": _STR}, ("input",))),
            tags=("openai",))},
        **{path: rerank for path in ("/rerank", "/reranking", "/v1/rerank", "/v1/reranking")},
        "/cors-proxy": {method: _op(
            "Make a request for a browser page (--ui-mcp-proxy; 403 without): only "
            "x-llama-server-proxy-header-NAME headers reach the target, as NAME",
            _responses({}, ok_type="*/*", description="The target's answer"),
            params=[_query("url", {"type": "string", "pattern": "^https?://"}, required=True)],
            tags=("operations",)) for method in ("get", "post")},
        "/metrics": {"get": _op("Prometheus metrics (--metrics)", _responses(_STR, ok_type="text/plain"),
                                tags=("operations",))},
        "/openapi.json": {"get": _op("This description", _responses({"type": "object"}), tags=("operations",))},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version,
                 "description": "llama.cpp's HTTP server API (the 2024 specification), served by llamacy."},
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR},
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer",
                                           "description": "Needed on every endpoint but /health and static "
                                                          "files when the server runs with --api-key"}},
        },
    }
