"""Server configuration: the spec's command-line flags as one frozen dataclass."""
from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ServerConfig:
    # model
    model: str | None = None
    model_url: str | None = None
    hf_repo: str | None = None
    hf_file: str | None = None
    alias: str | None = None             # one name, or several comma-separated
    tags: tuple[str, ...] = ()
    lora: tuple[str, ...] = ()
    lora_base: str | None = None
    mmproj: str | None = None
    n_gpu_layers: int = 0
    split_mode: str = "layer"            # none | layer | row
    main_gpu: int = 0
    tensor_split: tuple[float, ...] = ()
    rpc_servers: tuple[str, ...] = ()    # host:port of ggml RPC servers
    mlock: bool = False
    no_mmap: bool = False
    numa: str | None = None
    # context
    n_ctx: int = 512
    n_batch: int = 2048
    n_ubatch: int = 512
    n_parallel: int = 1
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    threads_batch: int = -1
    threads_http: int = -1
    n_predict: int = -1
    rope_scaling: str | None = None
    rope_freq_base: float = 0.0
    rope_freq_scale: float = 0.0
    yarn_ext_factor: float = -1.0
    yarn_attn_factor: float = 1.0
    yarn_beta_slow: float = 1.0
    yarn_beta_fast: float = 32.0
    pooling: str | None = None
    defrag_thold: float = -1.0
    flash_attn: bool = False
    backend_sampling: str = "auto"   # "on", "off", or "auto": on with a GPU (-ngl and a GPU device)
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    grp_attn_n: int = 1
    grp_attn_w: int = 512
    embeddings: bool = False
    system_prompt_file: str | None = None
    chat_template: str | None = None
    reasoning_format: str = "deepseek"
    reasoning_budget: int = -1
    prefill_assistant: bool = True       # a trailing assistant message is continued, not closed
    spm_infill: bool = False
    # sampling: (request option, default) pairs from --temp, --seed, ... (the rest: the spec's defaults)
    sampling: tuple[tuple[str, object], ...] = ()
    # http
    hosts: tuple[str, ...] = ("127.0.0.1",)
    port: int = 8080
    timeout: int = 600
    path: str | None = None
    webui: bool = True
    api_keys: tuple[str, ...] = ()
    ssl_key_file: str | None = None
    ssl_cert_file: str | None = None
    slots_endpoint: bool = True
    metrics: bool = False
    slot_save_path: str | None = None
    # CORS (today's llama-server flags; the defaults are the 2024 behaviour: any origin, reflected)
    cors_origins: str = "*"              # "*", "localhost", or comma-separated origins
    cors_methods: str = "GET, POST, DELETE, OPTIONS"
    cors_headers: str = "*"
    cors_credentials: bool = True
    ui_mcp_proxy: bool = False           # /cors-proxy for a browser front end (off: 403)
    # limits (each documented in the README; beyond one → 400/413/503)
    max_body_bytes: int = 32 << 20
    queue_max: int = 1024
    max_n_probs: int = 100
    max_stop_strings: int = 64
    max_stop_length: int = 256
    max_grammar_bytes: int = 256 << 10
    max_schema_depth: int = 64
    max_embedding_inputs: int = 2048
    # logging
    verbose: bool = False
    log_disable: bool = False
    log_format: str = "json"
    log_file: str | None = None
