"""engine.multimodal: a projector (the tiny random one of tools/make_test_gguf.py --vision) loaded
for its model, images decoded by the engine, prompts cut into chunks, image chunks evaluated."""
from __future__ import annotations

import pytest

from images import N_IMAGE, bmp, jpeg, make_vision_model, png
from llamacy.engine.context import Batch, Context
from llamacy.engine.model import Model
from llamacy.engine.multimodal import Projector, default_marker
from llamacy.errors import ModelLoadError


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    model_path, proj_path = make_vision_model(tmp_path_factory.mktemp("engine-vision"))
    model = Model(model_path)
    proj = Projector(model, proj_path, use_gpu=False, n_threads=1, warmup=False)
    yield model, proj
    proj.close()
    model.close()


def test_projector_capabilities(vision):
    _, proj = vision
    assert proj.supports_vision and not proj.supports_audio and not proj.uses_mrope
    assert proj.marker == default_marker() == "<__media__>"


def test_a_projector_for_another_model_is_refused(vision, model, model_path):
    _, proj = vision
    with pytest.raises(ModelLoadError, match="mismatch"):
        Projector(model, proj.path, use_gpu=False, n_threads=1)    # SmolLM2: n_embd 576, not 32
    with pytest.raises(ModelLoadError, match="failed to load the multimodal projector"):
        Projector(vision[0], model_path, use_gpu=False, n_threads=1)


def test_images_are_decoded_by_the_engine(vision):
    _, proj = vision
    img = proj.load_image(png(7, 5, (1, 2, 3)), "a")
    assert (img.width, img.height, img.id) == (7, 5, "a")
    assert proj.load_image(bmp(3, 4, (9, 9, 9)), "b").height == 4
    grey = proj.load_image(jpeg(20, 12, 200, stripe=30), "j")
    assert (grey.width, grey.height) == (20, 12)
    for bad in (b"", b"\x89PNG\r\n\x1a\nxx", b"plain text"):
        with pytest.raises(ValueError):
            proj.load_image(bad, "c")


def test_tokenize_and_evaluate(vision):
    model, proj = vision
    images = [proj.load_image(png(10, 10, (200, 0, 0)), "red"), proj.load_image(png(10, 10, (0, 0, 200)), "blue")]
    text = f"A {proj.marker} and {proj.marker} end"
    chunks = proj.tokenize(text, images, add_special=False)
    kinds = [chunks.kind(i) for i in range(len(chunks))]
    assert kinds == ["text", "image", "text", "image", "text"]
    assert [chunks.id(i) for i in (1, 3)] == ["red", "blue"]
    assert chunks.n_tokens(1) == chunks.n_pos(1) == N_IMAGE
    assert chunks.tokens(0) == model.vocab.tokenize("A ", add_special=False, parse_special=True)
    with pytest.raises(ValueError, match="different number"):
        proj.tokenize(text, images[:1], add_special=False)
    ctx = Context(model, n_ctx=256, n_batch=64, n_seq_max=1, n_threads=1)
    try:
        pos = 0
        batch = Batch(64, 1)
        for i in range(len(chunks)):
            if chunks.kind(i) == "image":
                assert proj.eval_chunk(chunks, i, ctx, pos, 0, 64) == pos + N_IMAGE
                pos += N_IMAGE
            else:
                toks = chunks.tokens(i)
                batch.clear()
                batch.add_sequence(toks, pos, 0, False)
                ctx.decode(batch)
                pos += len(toks)
        assert ctx.seq_pos_max(0) == pos - 1
    finally:
        ctx.close()
