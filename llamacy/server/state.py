"""Everything the handlers share: config, model, context, scheduler, loading status."""
from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field

from llamacy.config import ServerConfig
from llamacy.errors import LlamacyError, UnavailableError

log = logging.getLogger(__name__)


@dataclass
class SystemPrompt:
    prompt: str = ""
    anti_prompt: str = ""
    assistant_name: str = ""


@dataclass
class ServerState:
    config: ServerConfig
    status: str = "loading model"        # "loading model" | "ok" | "error"
    model_path: str = ""
    model = None
    ctx = None
    scheduler = None
    chat_template = None
    system_prompt: SystemPrompt = field(default_factory=SystemPrompt)
    metrics = None

    @property
    def model_name(self) -> str:
        return self.config.alias or self.model_path

    def require_ready(self):
        if self.status == "loading model":
            raise UnavailableError("Loading model")
        if self.status != "ok":
            raise LlamacyError("Model failed to load")
        return self.scheduler

    @property
    def add_bos(self) -> bool:
        """The spec's BOS rule: only while no system prompt is set."""
        return not self.system_prompt.prompt


def load_engine(state: ServerState) -> None:
    """Load the model and create the context (runs on a worker thread at start-up)."""
    from llamacy.engine.context import Context
    from llamacy.engine.model import Model, init_backend, supports_gpu_offload
    from llamacy.models import default_model_path
    from llamacy.serving.scheduler import Scheduler

    c = state.config
    init_backend(verbose=c.verbose, numa=c.numa)
    if c.n_gpu_layers and not supports_gpu_offload():
        log.warning("-ngl %d ignored: this engine build has no GPU offload", c.n_gpu_layers)
    path = c.model or default_model_path()
    state.model_path = path
    model = Model(path, n_gpu_layers=c.n_gpu_layers, main_gpu=c.main_gpu, tensor_split=list(c.tensor_split),
                  use_mmap=not c.no_mmap, use_mlock=c.mlock)
    for lora in c.lora:
        model.load_lora(lora, 1.0)
    n_ctx = c.n_ctx if c.n_ctx > 0 else model.n_ctx_train
    ctx = Context(model, n_ctx=n_ctx, n_batch=c.n_batch, n_ubatch=c.n_ubatch, n_seq_max=c.n_parallel,
                  n_threads=c.threads, n_threads_batch=c.threads_batch, rope_scaling=c.rope_scaling,
                  rope_freq_base=c.rope_freq_base, rope_freq_scale=c.rope_freq_scale,
                  yarn_ext_factor=c.yarn_ext_factor, yarn_attn_factor=c.yarn_attn_factor,
                  yarn_beta_fast=c.yarn_beta_fast, yarn_beta_slow=c.yarn_beta_slow, pooling=c.pooling,
                  flash_attn=c.flash_attn, type_k=c.cache_type_k, type_v=c.cache_type_v,
                  defrag_thold=c.defrag_thold, embeddings=False)
    model.vocab.pieces  # build the piece table before serving
    state.model, state.ctx = model, ctx
    state.scheduler = Scheduler(model, ctx, n_parallel=c.n_parallel, n_batch=c.n_batch, n_predict=c.n_predict,
                                embeddings=c.embeddings)
    log.info("model loaded: %s (%s, n_ctx %d, %d slots of %d)", os.path.basename(path), model.desc, ctx.n_ctx,
             c.n_parallel, ctx.n_ctx // c.n_parallel)
