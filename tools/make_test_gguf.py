#!/usr/bin/env python3
"""Write a tiny llama-architecture GGUF for tests: the tokenizer of an existing GGUF (by
default the packaged SmolLM2 model), random F32 weights, and optional FIM token ids, so
features the default model lacks (infill) can be exercised end to end. Outputs are noise.

    python tools/make_test_gguf.py OUT.gguf [--source MODEL.gguf] [--fim PRE,SUF,MID[,REP,SEP]] [--vision MMPROJ.gguf]
    python tools/make_test_gguf.py OUT.gguf --lora-for MODEL.gguf [--rank 8]
    python tools/make_test_gguf.py OUT.gguf --reranker [--rerank-template TEXT]

``--vision MMPROJ.gguf`` also writes a matching random multimodal projector: a LLaVA-style
``clip`` GGUF (projector type ``mlp``) whose tiny ViT reads a 32x32 image in 8x8 patches, so
every image becomes 16 embeddings of the language model's width (libmtmd resizes any image to
32x32 first). Its weights are large enough that different images change the model's output.

``--lora-for`` writes instead a random LoRA adapter for MODEL's attention and FFN weights
(strong enough to change its greedy output), to test --lora.

``--reranker`` writes a tiny Qwen3-style reranker (what llama.cpp's converter makes of
Qwen3-Reranker): pooling type rank, a ``cls.output`` head with the labels "yes"/"no", whose
softmax gives one relevance score in (0, 1) from the last token. Its tokenizer asks for
BERT-style BOS/EOS/SEP around the query and the document (so the rerank prompt layout shows);
``--rerank-template`` adds a ``tokenizer.chat_template.rerank`` with {query} and {document}.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def random_weights(seed: int, default_scale: float):
    """``weights(*shape, scale=default_scale)``: float32 normal values times scale, all drawn
    from one generator seeded with ``seed`` (so a file's tensors depend on their order only)."""
    rng = np.random.default_rng(seed)

    def weights(*shape: int, scale: float = default_scale) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    return weights


def copy_tokenizer(reader, writer, skip: frozenset[str] = frozenset()) -> int:
    """Copy every ``tokenizer.*`` key of ``reader`` (but those in ``skip``) into ``writer``;
    returns the vocab size."""
    import gguf
    vt = gguf.GGUFValueType
    n_vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer.") or key in skip:
            continue
        kind = field.types[0]
        if kind == vt.ARRAY:
            sub = field.types[1]
            if sub == vt.STRING:
                values = [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
            else:
                values = [field.parts[i][0].item() for i in field.data]
            writer.add_array(key, values)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(values)
        elif kind == vt.STRING:
            writer.add_string(key, bytes(field.parts[field.data[0]]).decode("utf-8", "replace"))
        elif kind == vt.BOOL:
            writer.add_bool(key, bool(field.parts[field.data[0]][0]))
        elif kind in (vt.UINT32, vt.INT32):
            writer.add_uint32(key, int(field.parts[field.data[0]][0]))
    return n_vocab


def make(out: str, source: str, fim: tuple[int, ...] | None, n_embd: int = 32, n_layer: int = 1,
         n_head: int = 2, n_ff: int = 64, seed: int = 0) -> None:
    import gguf
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, "llama")
    n_vocab = copy_tokenizer(reader, writer)
    if fim:
        writer.add_uint32(gguf.Keys.Tokenizer.FIM_PRE_ID, fim[0])
        writer.add_uint32(gguf.Keys.Tokenizer.FIM_SUF_ID, fim[1])
        writer.add_uint32(gguf.Keys.Tokenizer.FIM_MID_ID, fim[2])
        if len(fim) == 5:    # repository-level FIM: the repository and file separator tokens
            writer.add_uint32(gguf.Keys.Tokenizer.FIM_REP_ID, fim[3])
            writer.add_uint32(gguf.Keys.Tokenizer.FIM_SEP_ID, fim[4])
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    weights = random_weights(seed, 0.05)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", weights(n_vocab, n_embd))
    for i in range(n_layer):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(b + name + ".weight", weights(n_embd, n_embd))
        writer.add_tensor(b + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(b + "ffn_gate.weight", weights(n_ff, n_embd))
        writer.add_tensor(b + "ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(b + "ffn_down.weight", weights(n_embd, n_ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_mamba(out: str, source: str, n_embd: int = 32, n_layer: int = 1, d_state: int = 8, d_conv: int = 4,
               dt_rank: int = 4, seed: int = 0) -> None:
    """A tiny Mamba (a recurrent state per sequence instead of a KV cache): for what must behave
    differently when the memory cannot drop the end of a sequence."""
    import gguf
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, "mamba")
    n_vocab = copy_tokenizer(reader, writer)
    d_inner = 2 * n_embd            # the only expansion factor libllama takes
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_head_count_kv(0)
    writer.add_ssm_conv_kernel(d_conv)
    writer.add_ssm_inner_size(d_inner)
    writer.add_ssm_state_size(d_state)
    writer.add_ssm_time_step_rank(dt_rank)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    weights = random_weights(seed, 0.05)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    for i in range(n_layer):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(b + "ssm_in.weight", weights(2 * d_inner, n_embd))
        writer.add_tensor(b + "ssm_conv1d.weight", weights(d_inner, d_conv, scale=0.3))
        writer.add_tensor(b + "ssm_conv1d.bias", np.zeros(d_inner, dtype=np.float32))
        writer.add_tensor(b + "ssm_x.weight", weights(dt_rank + 2 * d_state, d_inner))
        writer.add_tensor(b + "ssm_dt.weight", weights(d_inner, dt_rank))
        writer.add_tensor(b + "ssm_dt.bias", np.full(d_inner, -2.0, dtype=np.float32))
        writer.add_tensor(b + "ssm_a", -np.exp(weights(d_inner, d_state, scale=0.5)))   # A = -exp(A_log)
        writer.add_tensor(b + "ssm_d", np.ones(d_inner, dtype=np.float32))
        writer.add_tensor(b + "ssm_out.weight", weights(n_embd, d_inner))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


VISION_IMAGE_SIZE, VISION_PATCH = 32, 8     # 16 image tokens per image


def make_projector(out: str, n_embd_text: int, n_embd: int = 32, n_layer: int = 2, n_head: int = 2,
                   n_ff: int = 64, seed: int = 1) -> None:
    """A random LLaVA-1.5-style projector (what libmtmd loads as ``clip`` with projector type
    ``mlp``): patch embedding (conv), position embeddings, pre-norm ViT blocks (LLaVA reads the
    one before the last), then mm.0 → GELU → mm.2 into the text model's ``n_embd_text``."""
    import gguf
    writer = gguf.GGUFWriter(out, "clip")
    n_patches = (VISION_IMAGE_SIZE // VISION_PATCH) ** 2
    writer.add_string("general.name", "llamacy test projector")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_bool("clip.has_vision_encoder", True)
    writer.add_string("clip.projector_type", "mlp")
    writer.add_bool("clip.use_gelu", True)
    writer.add_uint32("clip.vision.image_size", VISION_IMAGE_SIZE)
    writer.add_uint32("clip.vision.patch_size", VISION_PATCH)
    writer.add_uint32("clip.vision.embedding_length", n_embd)
    writer.add_uint32("clip.vision.feed_forward_length", n_ff)
    writer.add_uint32("clip.vision.projection_dim", n_embd_text)
    writer.add_uint32("clip.vision.block_count", n_layer)
    writer.add_uint32("clip.vision.attention.head_count", n_head)
    writer.add_float32("clip.vision.attention.layer_norm_epsilon", 1e-5)
    writer.add_array("clip.vision.image_mean", [0.5, 0.5, 0.5])
    writer.add_array("clip.vision.image_std", [0.5, 0.5, 0.5])
    weights = random_weights(seed, 0.2)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    def zeros(n: int) -> np.ndarray:
        return np.zeros(n, dtype=np.float32)

    writer.add_tensor("v.patch_embd.weight", weights(n_embd, 3, VISION_PATCH, VISION_PATCH))
    writer.add_tensor("v.patch_embd.bias", zeros(n_embd))
    writer.add_tensor("v.position_embd.weight", weights(n_patches, n_embd))
    writer.add_tensor("v.pre_ln.weight", ones(n_embd))
    writer.add_tensor("v.pre_ln.bias", zeros(n_embd))
    for i in range(n_layer):
        b = f"v.blk.{i}."
        for name in ("attn_q", "attn_k", "attn_v", "attn_out"):
            writer.add_tensor(b + name + ".weight", weights(n_embd, n_embd))
            writer.add_tensor(b + name + ".bias", zeros(n_embd))
        for name in ("ln1", "ln2"):
            writer.add_tensor(b + name + ".weight", ones(n_embd))
            writer.add_tensor(b + name + ".bias", zeros(n_embd))
        writer.add_tensor(b + "ffn_up.weight", weights(n_ff, n_embd))
        writer.add_tensor(b + "ffn_up.bias", zeros(n_ff))
        writer.add_tensor(b + "ffn_down.weight", weights(n_embd, n_ff))
        writer.add_tensor(b + "ffn_down.bias", zeros(n_embd))
    writer.add_tensor("mm.0.weight", weights(n_embd_text, n_embd))
    writer.add_tensor("mm.0.bias", zeros(n_embd_text))
    writer.add_tensor("mm.2.weight", weights(n_embd_text, n_embd_text, scale=0.5))
    writer.add_tensor("mm.2.bias", zeros(n_embd_text))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# The reranker's special tokens, taken from SmolLM2's: <|im_start|>, <|im_end|>, <repo_name>.
RERANK_BOS, RERANK_EOS, RERANK_SEP = 1, 2, 3


def make_reranker(out: str, source: str, template: str | None = None, n_embd: int = 32, n_layer: int = 1,
                  n_head: int = 2, n_ff: int = 64, seed: int = 0) -> None:
    """A random Qwen3 reranker: causal, rank pooling reads the last token, ``cls.output``
    (n_embd -> 2 labels) then a softmax, so score = P("yes")."""
    import gguf
    reader = gguf.GGUFReader(source)
    writer = gguf.GGUFWriter(out, "qwen3")
    tk = gguf.Keys.Tokenizer
    n_vocab = copy_tokenizer(reader, writer, skip=frozenset({tk.ADD_BOS, tk.ADD_EOS, tk.BOS_ID, tk.EOS_ID}))
    writer.add_bos_token_id(RERANK_BOS)
    writer.add_eos_token_id(RERANK_EOS)
    writer.add_sep_token_id(RERANK_SEP)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(True)
    writer.add_add_sep_token(True)
    if template is not None:
        writer.add_string(tk.CHAT_TEMPLATE + ".rerank", template)
    writer.add_pooling_type(gguf.PoolingType.RANK)
    writer.add_array(gguf.Keys.Classifier.OUTPUT_LABELS.format(arch="qwen3"), ["yes", "no"])
    head_dim = n_embd // n_head
    writer.add_context_length(2048)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(1e-6)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    weights = random_weights(seed, 0.05)

    writer.add_tensor("token_embd.weight", weights(n_vocab, n_embd, scale=1.0))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, dtype=np.float32))
    writer.add_tensor("cls.output.weight", weights(2, n_embd, scale=0.5))
    for i in range(n_layer):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", np.ones(n_embd, dtype=np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(b + name + ".weight", weights(n_embd, n_embd, scale=0.3))
        writer.add_tensor(b + "attn_q_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(b + "attn_k_norm.weight", np.ones(head_dim, dtype=np.float32))
        writer.add_tensor(b + "ffn_norm.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(b + "ffn_gate.weight", weights(n_ff, n_embd, scale=0.3))
        writer.add_tensor(b + "ffn_up.weight", weights(n_ff, n_embd, scale=0.3))
        writer.add_tensor(b + "ffn_down.weight", weights(n_embd, n_ff, scale=0.3))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_lora(out: str, base: str, rank: int = 8, scale: float = 0.5, seed: int = 0) -> None:
    """A LoRA adapter GGUF for ``base``: lora_a (rank x n_in) and lora_b (n_out x rank) per
    attention/FFN weight, in the layout libllama expects (A already transposed)."""
    import gguf
    reader = gguf.GGUFReader(base)
    arch = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    writer = gguf.GGUFWriter(out, arch)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    rng = np.random.default_rng(seed)
    targets = ("attn_q.weight", "attn_v.weight", "ffn_down.weight")
    for t in reader.tensors:
        if not t.name.startswith("blk.") or not t.name.endswith(targets):
            continue
        n_in, n_out = int(t.shape[0]), int(t.shape[1])   # ggml order: ne0 = input width
        writer.add_tensor(t.name + ".lora_a", (rng.standard_normal((rank, n_in)) * scale).astype(np.float32))
        writer.add_tensor(t.name + ".lora_b", (rng.standard_normal((n_out, rank)) * scale).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--source", help="GGUF to take the tokenizer from (default: the packaged SmolLM2)")
    ap.add_argument("--fim", help="FIM prefix,suffix,middle[,repository,separator] token ids, e.g. 3,4,5 or 3,4,5,6,7")
    ap.add_argument("--vision", metavar="MMPROJ", help="also write a matching random multimodal projector here")
    ap.add_argument("--lora-for", metavar="MODEL", help="write a random LoRA adapter for this model instead")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--reranker", action="store_true", help="write a tiny Qwen3-style reranker (pooling rank)")
    ap.add_argument("--mamba", action="store_true", help="write a tiny Mamba (recurrent state, no KV cache)")
    ap.add_argument("--rerank-template", help="with --reranker: a rerank prompt template with {query}, {document}")
    args = ap.parse_args(argv)
    if args.lora_for:
        make_lora(args.out, args.lora_for, args.rank)
        return 0
    source = args.source
    if source is None:
        from llamacy.models import default_model_path
        source = default_model_path()
    if args.rerank_template is not None and not args.reranker:
        ap.error("--rerank-template goes with --reranker")
    if args.reranker:
        make_reranker(args.out, source, args.rerank_template)
        return 0
    if args.mamba:
        make_mamba(args.out, source)
        return 0
    fim = tuple(int(x) for x in args.fim.split(",")) if args.fim else None
    if fim is not None and len(fim) not in (3, 5):
        ap.error("--fim takes three or five token ids")
    n_embd = 32
    make(args.out, source, fim, n_embd=n_embd)
    if args.vision:
        make_projector(args.vision, n_embd_text=n_embd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
