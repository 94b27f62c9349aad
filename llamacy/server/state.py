"""Everything the handlers share: config, model, context, scheduler, loading status."""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from llamacy.api.limits import RequestLimits, check_completion_limits
from llamacy.config import ServerConfig
from llamacy.errors import InvalidRequestError, LlamacyError, UnavailableError

log = logging.getLogger(__name__)

# --backend-sampling: candidates selected on the device per output. Enough for the spec's default
# chain (top_k 40 after repeat penalties over 64 tokens: 104, plus a few banned or lowered tokens);
# a request needing more samples its whole row.
DEVICE_TOP_K = 128
# a device greedy adjusts up to this many tokens a row: the default penalty window (64) and a
# few biased ones (e.g. ignore_eos's end-of-generation tokens)
DEVICE_GREEDY_SLOTS = 80


@dataclass
class SystemPrompt:
    prompt: str = ""
    anti_prompt: str = ""
    assistant_name: str = ""


@dataclass
class PreparedSystemPrompt:
    """A validated, tokenized system prompt, not yet applied."""

    info: SystemPrompt
    tokens: list[int]


@dataclass
class ServerState:
    config: ServerConfig
    status: str = "loading model"        # "loading model" | "ok" | "error"
    model_path: str = ""
    model = None
    ctx = None
    embed_ctx = None
    scheduler = None
    chat_template = None
    system_prompt: SystemPrompt = field(default_factory=SystemPrompt)
    metrics = None
    faults = None                        # a FaultInjector, only with LLAMACY_TEST_FAULTS=1
    in_flight: int = 0                   # handlers between prepare() and on_finish()
    parse_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="llamacy-parse"))
    engine_info: dict = field(default_factory=dict)   # backends.report(): CPU variant, devices
    vision = None                        # api.images.Vision with --mmproj: the model accepts images
    sampling_defaults = None             # SamplingParams: the spec's defaults, with --temp, --seed, ...
    started_at: float = field(default_factory=time.time)   # Unix time: /metrics' Process-Start-Time-Unix

    @property
    def aliases(self) -> list[str]:
        """The model's names from --alias (comma-separated), sorted."""
        return sorted({a.strip() for a in (self.config.alias or "").split(",") if a.strip()})

    @property
    def model_name(self) -> str:
        """The model's id: its first alias in sorted order (as llama-server), else its path."""
        aliases = self.aliases
        return aliases[0] if aliases else self.model_path

    @property
    def limits(self) -> RequestLimits:
        c = self.config
        return RequestLimits(max_n_probs=c.max_n_probs, max_stop_strings=c.max_stop_strings,
                             max_stop_length=c.max_stop_length, max_grammar_bytes=c.max_grammar_bytes,
                             max_schema_depth=c.max_schema_depth, max_embedding_inputs=c.max_embedding_inputs)

    @property
    def error(self) -> str | None:
        """Why the server cannot serve (model load failure, unusable engine), or None."""
        if self.status == "error":
            return "the model failed to load"
        if self.scheduler is not None and self.scheduler.error is not None:
            return f"the engine is unusable: {self.scheduler.error}"
        return None

    def require_ready(self):
        if self.status == "loading model":
            raise UnavailableError("Loading model")
        if self.status != "ok":
            raise LlamacyError("Model failed to load")
        if self.scheduler.error is not None:
            raise UnavailableError(f"the engine is unusable: {self.scheduler.error}")
        return self.scheduler

    def grammar_from_schema(self, schema) -> str:
        from llamacy.api.json_schema import json_schema_to_grammar
        return json_schema_to_grammar(schema, max_depth=self.config.max_schema_depth)

    def check_completion(self, params) -> None:
        """Limits and the grammar, checked before a request may change anything."""
        from llamacy.engine.sampling import validate_grammar
        check_completion_limits(params, self.limits)
        if params.media is not None:    # prompts with images are never truncated: one too long is a 400 now
            from llamacy.serving.multimodal import check_fits
            n_system = len(self.scheduler.system_tokens) if params.with_system_prompt else 0
            check_fits(params.prompt_tokens, params.media, self.scheduler.n_ctx_slot - n_system)
        if params.sampling.grammar:
            validate_grammar(self.model, params.sampling.grammar)

    def prepare_system_prompt(self, obj) -> PreparedSystemPrompt:
        """The spec's ``system_prompt`` object {prompt, anti_prompt, assistant_name}, validated and
        tokenized (applied later, together with the request that carries it)."""
        info = parse_system_prompt(obj)
        vocab = self.model.vocab
        tokens = vocab.tokenize(info.prompt, add_special=vocab.add_bos, parse_special=True) if info.prompt else []
        self.scheduler.check_system_prompt(tokens)
        return PreparedSystemPrompt(info, tokens)

    def set_system_prompt(self, obj) -> None:
        """Set the system prompt now (-spf at start-up)."""
        prepared = self.prepare_system_prompt(obj)
        self.scheduler.set_system_prompt(prepared.tokens)
        self.system_prompt = prepared.info

    @property
    def chat_defaults(self):
        """The server's chat settings a request may override (--reasoning-format/-budget)."""
        from llamacy.api.openai import ChatDefaults
        c = self.config
        return ChatDefaults(reasoning_format=c.reasoning_format, enable_thinking=c.reasoning_budget != 0,
                            max_schema_depth=c.max_schema_depth, prefill_assistant=c.prefill_assistant)

    def parse_chat(self, body, add_bos: bool | None = None):
        """A chat/completions body → ChatRequest (the prompt tokenized, how to read the output)."""
        from llamacy.api.openai import parse_chat
        return parse_chat(body, self.model.vocab, self.chat_template, add_bos=self.add_bos if add_bos is None else add_bos,
                          grammar_from_schema=self.grammar_from_schema, defaults=self.chat_defaults,
                          sampling_defaults=self.sampling_defaults, vision=self.vision)

    def count_chat_tokens(self, body) -> int:
        """How many tokens the prompt of a chat/completions body has (nothing is generated)."""
        from llamacy.api.completion import tokenize_prompt
        from llamacy.api.openai import chat_prompt
        prompt = chat_prompt(body, self.chat_template, self.chat_defaults).prompt
        return len(tokenize_prompt(self.model.vocab, prompt, add_bos=self.add_bos))

    @property
    def add_bos(self) -> bool:
        """The spec's BOS rule: only while no system prompt is set."""
        return not self.system_prompt.prompt


def parse_system_prompt(obj) -> SystemPrompt:
    if not isinstance(obj, dict):
        raise InvalidRequestError("'system_prompt' must be an object with prompt, anti_prompt, assistant_name")
    fields = {}
    for name in ("prompt", "anti_prompt", "assistant_name"):
        val = obj.get(name, "")
        if not isinstance(val, str):
            raise InvalidRequestError(f"'system_prompt.{name}' must be a string")
        fields[name] = val
    return SystemPrompt(**fields)


def load_engine(state: ServerState) -> None:
    """Load the model and create the context (runs on a worker thread at start-up)."""
    from llamacy.engine.context import Context
    from llamacy.engine import backends
    from llamacy.engine.model import Model, init_backend
    from llamacy.download import resolve_model
    from llamacy.models import default_model_path
    from llamacy.serving.scheduler import Scheduler
    from llamacy.api.chat_template import resolve_chat_template

    c = state.config
    init_backend(verbose=c.verbose, numa=c.numa)
    for endpoint in c.rpc_servers:
        names = backends.add_rpc_server(endpoint)
        log.info("RPC server %s: devices %s", endpoint, ", ".join(names))
    state.engine_info = backends.report()
    log_engine(state.engine_info)
    if c.n_gpu_layers and not backends.gpu_devices() and not c.rpc_servers:
        log.warning("-ngl %d: no GPU device on this machine and no --rpc servers; the model runs on the CPU",
                    c.n_gpu_layers)
    if c.lora_base:
        log.warning("--lora-base %s ignored: the engine applies LoRA adapters to the loaded model itself",
                    c.lora_base)
    if c.threads_http > 0:
        log.warning("--threads-http %d ignored: HTTP runs on one event loop", c.threads_http)
    path = resolve_model(c) or c.model or default_model_path()
    state.model_path = path
    model = Model(path, n_gpu_layers=c.n_gpu_layers, split_mode=c.split_mode, main_gpu=c.main_gpu,
                  tensor_split=list(c.tensor_split), use_mmap=not c.no_mmap, use_mlock=c.mlock)
    for lora in c.lora:
        model.load_lora(lora, 1.0)
    n_ctx = c.n_ctx if c.n_ctx > 0 else model.n_ctx_train
    pooling = c.pooling
    if c.embeddings and pooling is None:
        meta = model.metadata
        if f"{meta.get('general.architecture')}.pooling_type" not in meta:
            pooling = "mean"   # a generative model names no pooling: mean gives one vector per input
    ctx = Context(model, n_ctx=n_ctx, n_batch=c.n_batch, n_ubatch=c.n_ubatch, n_seq_max=c.n_parallel,
                  n_threads=c.threads, n_threads_batch=c.threads_batch, rope_scaling=c.rope_scaling,
                  rope_freq_base=c.rope_freq_base, rope_freq_scale=c.rope_freq_scale,
                  yarn_ext_factor=c.yarn_ext_factor, yarn_attn_factor=c.yarn_attn_factor,
                  yarn_beta_fast=c.yarn_beta_fast, yarn_beta_slow=c.yarn_beta_slow, pooling=None,
                  flash_attn=c.flash_attn, type_k=c.cache_type_k, type_v=c.cache_type_v,
                  defrag_thold=c.defrag_thold, embeddings=False)
    model.vocab.pieces  # build the piece table before serving
    vocab = model.vocab
    state.chat_template = resolve_chat_template(
        c.chat_template, model.chat_template(),
        bos_token=vocab.token_text(vocab.bos) if vocab.bos >= 0 else "",
        eos_token=vocab.token_text(vocab.eos) if vocab.eos >= 0 else "")
    state.sampling_defaults = server_sampling_defaults(c, model.vocab)
    state.model, state.ctx = model, ctx
    embed_ctx = None
    if c.embeddings:
        # one ubatch per embedding step: pooling needs each input's tokens in a single ubatch
        embed_ctx = Context(model, n_ctx=c.n_ubatch, n_batch=c.n_ubatch, n_ubatch=c.n_ubatch,
                            n_seq_max=min(max(c.n_parallel, 8), 64), n_threads=c.threads,
                            n_threads_batch=c.threads_batch, pooling=pooling, embeddings=True, kv_unified=True,
                            type_k=c.cache_type_k, type_v=c.cache_type_v)
    state.embed_ctx = embed_ctx
    projector = load_projector(c, model) if c.mmproj else None
    gpu = bool(c.n_gpu_layers and backends.gpu_devices())
    state.scheduler = Scheduler(model, ctx, n_parallel=c.n_parallel, n_batch=c.n_batch, n_predict=c.n_predict,
                                embed_ctx=embed_ctx, grp_attn_n=c.grp_attn_n, grp_attn_w=c.grp_attn_w,
                                max_queued=c.queue_max, max_n_probs=c.max_n_probs, faults=state.faults,
                                projector=projector,
                                **loop_options(c, gpu=gpu, recurrent=model.has_recurrent_state,
                                               projector=projector is not None))
    if projector is not None:
        from llamacy.api.images import Vision
        state.vision = Vision(projector)
    if c.system_prompt_file:
        state.set_system_prompt(read_system_prompt_file(c.system_prompt_file))
    log.info("model loaded: %s (%s, n_ctx %d, %d slots of %d)", os.path.basename(path), model.desc, ctx.n_ctx,
             c.n_parallel, ctx.n_ctx // c.n_parallel)


def loop_options(c: ServerConfig, *, gpu: bool, recurrent: bool, projector: bool) -> dict:
    """How the generation loop uses the device (Scheduler keywords). On a GPU it pads idle slots
    with throw-away tokens (removed after the step: not from a recurrent state, which cannot drop
    a token; not with a projector, whose images are evaluated between runs) and keeps a stable
    batch shape under load: from LLAMACY_STABLE_ON_AT outputs a step until a step has fewer than
    LLAMACY_STABLE_OFF_AT ("inf": never), prompt remainders of up to LLAMACY_STREAM_MAX tokens
    going in a token a step. Backend sampling: --backend-sampling always, auto only
    with a GPU and only while the steps have many outputs (from LLAMACY_DEVICE_ON_AT a step on
    average until below LLAMACY_DEVICE_OFF_AT), never with a projector. With a GPU a step's outputs
    are sampled on more threads, and a request takes the lowest idle slot unless another holds far
    more of its prompt (LLAMACY_ROWS_PER_THREAD, LLAMACY_COMPACT_REUSE_MIN), or the lowest would leave
    a prompt remainder too long to stream and a gap below a busy slot would not
    (LLAMACY_GAP_STREAMED=0: not). A GPU loop decodes its
    batch sizes once before serving (LLAMACY_WARM_UP=0: not). With backend sampling, greedy
    requests get their argmax on the device whatever the load (LLAMACY_DEVICE_GREEDY=0: not), and a
    step's device results come back in one copy per kind where they can (LLAMACY_DEVICE_ONE_COPY=0:
    one per output). The LLAMACY_* variables are benchmark knobs."""
    from llamacy.engine.generation import DEVICE_OFF_AT, DEVICE_ON_AT, STABLE_OFF_AT, STABLE_ON_AT, STREAM_MAX
    from llamacy.engine.step_outputs import GPU_ROWS_PER_THREAD, ROWS_PER_THREAD
    from llamacy.serving.admission import COMPACT_REUSE_MIN
    backend_sampling = c.backend_sampling == "on" or (c.backend_sampling == "auto" and gpu)
    rows = os.environ.get("LLAMACY_ROWS_PER_THREAD") or (GPU_ROWS_PER_THREAD if gpu else ROWS_PER_THREAD)
    return {"pad_gaps": gpu and not projector and not recurrent,
            "device_top_k": DEVICE_TOP_K if backend_sampling and not projector else 0,
            "device_auto": c.backend_sampling == "auto",
            "device_greedy_slots": (DEVICE_GREEDY_SLOTS if backend_sampling and not projector
                                    and os.environ.get("LLAMACY_DEVICE_GREEDY", "1") != "0" else 0),
            "device_one_copy": os.environ.get("LLAMACY_DEVICE_ONE_COPY", "1") != "0",
            "stable_on_at": float(os.environ.get("LLAMACY_STABLE_ON_AT", STABLE_ON_AT)),
            "stable_off_at": float(os.environ.get("LLAMACY_STABLE_OFF_AT", STABLE_OFF_AT)),
            "stream_max": int(os.environ.get("LLAMACY_STREAM_MAX", STREAM_MAX)),
            "device_on_at": float(os.environ.get("LLAMACY_DEVICE_ON_AT", DEVICE_ON_AT)),
            "device_off_at": float(os.environ.get("LLAMACY_DEVICE_OFF_AT", DEVICE_OFF_AT)),
            "rows_per_thread": int(rows),
            "compact_reuse_min": int(os.environ.get("LLAMACY_COMPACT_REUSE_MIN", COMPACT_REUSE_MIN)),
            "gap_streamed": os.environ.get("LLAMACY_GAP_STREAMED", "1") != "0",
            "warm_up": gpu and not projector and not recurrent and os.environ.get("LLAMACY_WARM_UP", "1") != "0"}


def load_projector(c: ServerConfig, model):
    """--mmproj: the multimodal projector, on the GPU when layers are (-ngl); ModelLoadError naming
    the file and libmtmd's reason when it is missing, not a projector, or made for another model."""
    from llamacy.engine.multimodal import Projector
    from llamacy.errors import ModelLoadError
    if not os.path.isfile(c.mmproj):
        raise ModelLoadError(f"--mmproj {c.mmproj}: no such file")
    if c.grp_attn_n > 1:    # self-extend regroups positions the images were placed at
        raise ModelLoadError("--mmproj cannot be combined with --grp-attn-n (self-extend)")
    n_threads = c.threads_batch if c.threads_batch > 0 else c.threads    # encoding an image is batch work
    projector = Projector(model, c.mmproj, use_gpu=c.n_gpu_layers != 0, n_threads=n_threads, verbose=c.verbose)
    if not projector.supports_vision:
        projector.close()
        raise ModelLoadError(f"--mmproj {c.mmproj}: the projector has no vision encoder (only images are supported)")
    if projector.uses_mrope:
        projector.close()
        raise ModelLoadError(f"--mmproj {c.mmproj}: the model places images with M-RoPE (e.g. Qwen2-VL), which "
                             "llamacy does not support")
    log.info("multimodal projector loaded: %s (images: %s)", c.mmproj, "GPU" if c.n_gpu_layers else "CPU")
    return projector


def server_sampling_defaults(c: ServerConfig, vocab):
    """The sampling options of a request that sets none: the spec's defaults, with the
    command line's --temp, --seed, ... (checked as a request's options are)."""
    from llamacy.api.completion import parse_sampling
    try:
        return parse_sampling(dict(c.sampling), vocab)
    except LlamacyError as exc:
        raise ValueError(f"sampling flags: {exc.message}") from None


def log_engine(info: dict) -> None:
    """One line naming what the engine runs on: the CPU variant, devices, skipped backends."""
    devs = "; ".join(f"{d['name']} ({d['description']}, {d['type']}, {d['memory_mib']} MiB)" for d in info["devices"])
    log.info("engine: backends %s; CPU variant %s (%s); devices: %s", ", ".join(info["backends"]),
             info["cpu_variant"], " ".join(info["cpu_features"]) or "baseline", devs)
    for skipped in info["skipped"]:
        log.info("engine: %s backend skipped: %s", skipped["backend"], skipped["reason"])


def read_system_prompt_file(path: str) -> dict:
    """-spf FILE: a JSON file holding the system_prompt object (or {"system_prompt": {...}})."""
    import orjson
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"cannot read system prompt file {path}: {exc}") from None
    if isinstance(data, dict) and isinstance(data.get("system_prompt"), dict):
        data = data["system_prompt"]
    return data
