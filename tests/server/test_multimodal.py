"""Images through --mmproj (libmtmd), on a tiny generated model and its random projector.

The projector (tools/make_test_gguf.py --vision) turns any image into 16 embeddings. The tests
prove: image tokens reach the context (counts, placeholder positions in the -v prompt log),
different images change the output probabilities and the same image reproduces them, the
prompt cache reuses a prefix that holds the same image (and only then), images in concurrent
slots and a saved/restored slot give the results of a lone fresh run, the OpenAI chat route
and /embedding and /infill take images too, and every bad input is a 400 naming what was wrong.

Images are PNG and BMP written by hand (tests/images.py): the engine's stb_image decodes them.
"""
from __future__ import annotations

import base64
import importlib.util
import re

import pytest

from helpers import ServerProcess, run_in_threads
from images import FIM, N_IMAGE, TOOLS, bmp, jpeg, make_vision_model, png, png_header

PRE, SUF, MID = FIM


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


RED = png(40, 30, (220, 20, 20))
BLUE = png(24, 24, (20, 40, 230), stripe=(250, 250, 250))
GREEN_BMP = bmp(16, 16, (10, 200, 10))
GREY_JPEG = jpeg(32, 24, 90, stripe=240)
PROMPT = "USER:[img-12]Describe the image in detail.\nASSISTANT:"


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_test_gguf", TOOLS / "make_test_gguf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def vision_files(tmp_path_factory) -> tuple[str, str]:
    return make_vision_model(tmp_path_factory.mktemp("vision"))


@pytest.fixture(scope="module")
def server(server_factory, vision_files, tmp_path_factory):
    model, proj = vision_files
    return server_factory("-m", model, "--mmproj", proj, "-c", "1024", "-np", "2", "-v", "--embeddings",
                          "--slot-save-path", str(tmp_path_factory.mktemp("mm-slots")))


@pytest.fixture(scope="module")
def plain_server(server_factory, vision_files):
    return server_factory("-m", vision_files[0], "-c", "512", "--embeddings")


def complete(server, prompt=PROMPT, images=None, **extra) -> dict:
    body = {"prompt": prompt, "n_predict": 1, "temperature": 0, "n_probs": 8, "cache_prompt": False, **extra}
    if images is not None:
        body["image_data"] = [{"data": b64(data), "id": ident} for ident, data in images.items()]
    r = server.post("/completion", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def top_probs(res: dict) -> list[tuple[str, float]]:
    return [(p["tok_str"], round(p["prob"], 5)) for p in res["completion_probabilities"][0]["probs"]]


def error_of(r, status: int = 400) -> str:
    assert r.status_code == status, r.text
    return r.json()["error"]["message"]


def logged_prompts(server) -> list[list[int]]:
    return [[int(x) for x in m.split(",")] for m in re.findall(r"prompt tokens: \[([-0-9, ]*)\]", server.log())]


# --- start-up and capabilities ------------------------------------------------------------

def test_props_and_models_say_the_model_accepts_images(server, plain_server):
    assert server.get("/props").json()["modalities"] == {"vision": True, "audio": False}
    assert "multimodal" in server.get("/v1/models").json()["data"][0]["capabilities"]
    assert plain_server.get("/props").json()["modalities"]["vision"] is False
    assert "multimodal" not in plain_server.get("/v1/models").json()["data"][0]["capabilities"]


def test_a_missing_or_mismatched_projector_stops_start_up(vision_files, tmp_path):
    model, _ = vision_files
    missing = ServerProcess("-m", model, "--mmproj", str(tmp_path / "nope.gguf"), wait=False)
    assert missing.proc.wait(120) != 0
    assert "nope.gguf: no such file" in missing.log()
    missing.stop()
    other = tmp_path / "wide.gguf"
    _load_tool().make_projector(str(other), n_embd_text=64)     # the model's n_embd is 32
    wrong = ServerProcess("-m", model, "--mmproj", str(other), wait=False)
    assert wrong.proc.wait(120) != 0
    log = wrong.log()
    assert "failed to load the multimodal projector" in log and "mismatch" in log, log[-2000:]
    wrong.stop()
    not_a_projector = ServerProcess("-m", model, "--mmproj", model, wait=False)
    assert not_a_projector.proc.wait(120) != 0
    assert "failed to load the multimodal projector" in not_a_projector.log()
    not_a_projector.stop()
    self_extend = ServerProcess("-m", model, "--mmproj", model, "--grp-attn-n", "2", wait=False)
    assert self_extend.proc.wait(120) != 0
    assert "--mmproj cannot be combined with --grp-attn-n" in self_extend.log()
    self_extend.stop()


# --- image tokens in the context ------------------------------------------------------------

def test_image_tokens_reach_the_context(server):
    one = complete(server, images={12: RED})
    two = complete(server, prompt="USER:[img-12][img-7]Describe the image in detail.\nASSISTANT:",
                   images={12: RED, 7: BLUE})
    assert two["tokens_evaluated"] == one["tokens_evaluated"] + N_IMAGE
    assert one["timings"]["prompt_n"] == one["tokens_evaluated"]
    # the -v prompt log: the image's positions hold 16 placeholders right after "USER:"
    user = server.post("/tokenize", json={"content": "USER:"}).json()["tokens"]
    tail = server.post("/tokenize", json={"content": "Describe the image in detail.\nASSISTANT:"}).json()["tokens"]
    prompt = logged_prompts(server)[-2]
    assert len(prompt) == one["tokens_evaluated"]
    start = prompt.index(user[-1]) + 1
    assert all(t < 0 for t in prompt[start:start + N_IMAGE])
    assert len(set(prompt[start:start + N_IMAGE])) == N_IMAGE
    assert prompt[start + N_IMAGE:] == tail
    assert all(t >= 0 for t in prompt[:start])


def test_different_images_change_the_output_and_the_same_image_reproduces_it(server):
    red = top_probs(complete(server, images={12: RED}))
    blue = top_probs(complete(server, images={12: BLUE}))
    green = top_probs(complete(server, images={12: GREEN_BMP}))
    grey = top_probs(complete(server, images={12: GREY_JPEG}))
    assert len({str(p) for p in (red, blue, green, grey)}) == 4
    assert top_probs(complete(server, images={12: GREY_JPEG})) == grey
    assert top_probs(complete(server, images={12: RED})) == red
    # the image is what matters, not the id naming it
    assert top_probs(complete(server, prompt=PROMPT.replace("12", "3"), images={3: RED})) == red


def test_several_images_in_one_prompt(server):
    a = top_probs(complete(server, prompt="A [img-1] then [img-2] and so:", images={1: RED, 2: BLUE}))
    b = top_probs(complete(server, prompt="A [img-1] then [img-2] and so:", images={1: BLUE, 2: RED}))
    assert a != b      # the order of the images matters
    res = complete(server, prompt="A [img-1] then [img-1] and so:", images={1: RED})
    assert res["tokens_evaluated"] == complete(server, prompt="A [img-1] then [img-2] and so:",
                                               images={1: RED, 2: BLUE})["tokens_evaluated"]


# --- the prompt cache --------------------------------------------------------------------

def test_cache_prompt_reuses_a_prefix_with_the_same_image(server):
    fresh = complete(server, images={12: RED}, id_slot=1)
    first = complete(server, images={12: RED}, id_slot=1, cache_prompt=True)
    again = complete(server, images={12: RED}, id_slot=1, cache_prompt=True)
    assert again["timings"]["prompt_n"] == 1                 # all but the last token came from the cache
    assert again["tokens_cached"] >= first["tokens_evaluated"]
    assert top_probs(again) == top_probs(first) == top_probs(fresh)
    # a longer prompt after the same image: only its new text is evaluated
    longer = complete(server, prompt=PROMPT + " Sure", images={12: RED}, id_slot=1, cache_prompt=True)
    n_before_text = len(server.post("/tokenize", json={"content": "USER:"}).json()["tokens"]) + N_IMAGE
    assert 1 <= longer["timings"]["prompt_n"] <= longer["tokens_evaluated"] - n_before_text
    # another image in the same place: evaluated again from the image on
    other = complete(server, images={12: BLUE}, id_slot=1, cache_prompt=True)
    assert other["timings"]["prompt_n"] >= N_IMAGE + 1
    assert top_probs(other) == top_probs(complete(server, images={12: BLUE}, id_slot=0))


def test_a_context_shift_keeps_the_image(server):
    """n_keep 0: the shift may drop the text after the image, never the image (n_keep is raised to
    its end), so the image's KV stays reusable and gives the results of a fresh run."""
    res = complete(server, images={12: RED}, id_slot=1, cache_prompt=True, n_keep=0, n_predict=520,
                   ignore_eos=True, n_probs=0)
    assert res["tokens_predicted"] == 520 and res["truncated"] is True
    assert "context shift" in server.log()
    again = complete(server, images={12: RED}, id_slot=1, cache_prompt=True)
    n_before_text = len(server.post("/tokenize", json={"content": "USER:"}).json()["tokens"]) + N_IMAGE
    assert 1 <= again["timings"]["prompt_n"] <= again["tokens_evaluated"] - n_before_text
    assert top_probs(again) == top_probs(complete(server, images={12: RED}, id_slot=0))


# --- concurrency and slot files ----------------------------------------------------------

def test_images_in_concurrent_slots(server):
    expected = {name: top_probs(complete(server, images={12: data})) for name, data in (("red", RED), ("blue", BLUE))}
    results: dict = {}

    def run(name, data):
        for _ in range(2):
            results.setdefault(name, []).append(top_probs(complete(server, images={12: data})))

    run_in_threads(run, (("red", RED), ("blue", BLUE)))
    assert results == {name: [probs, probs] for name, probs in expected.items()}


def test_save_and_restore_a_slot_holding_an_image(server):
    first = complete(server, images={12: BLUE}, id_slot=0, cache_prompt=True)
    saved = server.post("/slots/0?action=save", json={"filename": "image.bin"})
    assert saved.status_code == 200, saved.text
    assert saved.json()["n_saved"] == first["tokens_cached"]
    assert server.post("/slots/0?action=erase").status_code == 200
    restored = server.post("/slots/0?action=restore", json={"filename": "image.bin"})
    assert restored.status_code == 200, restored.text
    assert restored.json()["n_restored"] == first["tokens_cached"]
    again = complete(server, images={12: BLUE}, id_slot=0, cache_prompt=True)
    assert again["timings"]["prompt_n"] == 1
    assert top_probs(again) == top_probs(first)


# --- other routes ------------------------------------------------------------------------

def test_chat_completion_with_an_image_url_part(server):
    def chat(image: bytes | None):
        content = [{"type": "text", "text": "What is in this picture?"}]
        if image is not None:
            content.append({"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(image)}})
        r = server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}],
                                                      "max_tokens": 1, "temperature": 0, "logprobs": True,
                                                      "top_logprobs": 5})
        assert r.status_code == 200, r.text
        return r.json()

    text_only, red, blue = chat(None), chat(RED), chat(BLUE)
    assert red["usage"]["prompt_tokens"] >= text_only["usage"]["prompt_tokens"] + N_IMAGE
    assert red["usage"]["prompt_tokens"] == blue["usage"]["prompt_tokens"]
    top = [res["choices"][0]["logprobs"]["content"][0]["top_logprobs"] for res in (red, blue)]
    assert top[0] != top[1]


def test_openai_client_sends_an_image(server):
    from openai import OpenAI
    client = OpenAI(base_url=server.url + "/v1", api_key="none")
    res = client.chat.completions.create(model="tiny", max_tokens=2, messages=[{"role": "user", "content": [
        {"type": "text", "text": "Describe:"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(RED)}}]}])
    assert res.usage.prompt_tokens > N_IMAGE and res.usage.completion_tokens == 2


def test_anthropic_image_blocks_take_the_vision_path(server, plain_server):
    def block(image: bytes) -> dict:
        return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64(image)}}

    def message(content, srv=server):
        return srv.post("/v1/messages", json={"model": "tiny", "max_tokens": 1, "temperature": 0,
                                              "messages": [{"role": "user", "content": content}]})
    text = message([{"type": "text", "text": "What is this?"}])
    red = message([block(RED), {"type": "text", "text": "What is this?"}])
    assert text.status_code == 200 and red.status_code == 200, (text.text, red.text)
    assert red.json()["usage"]["input_tokens"] >= text.json()["usage"]["input_tokens"] + N_IMAGE
    # an image in a tool result (Anthropic's way of returning a file the tool read)
    r = server.post("/v1/messages", json={"model": "tiny", "max_tokens": 1, "messages": [
        {"role": "user", "content": "What is in this image?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "tool_1", "name": "read",
                                           "input": {"file": "test.png"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tool_1", "content": [
            {"type": "text", "text": "File: test.png"}, block(BLUE)]}]}]})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["input_tokens"] > N_IMAGE
    # without a projector, and with a bad source: 400s naming the problem
    assert "this model does not accept images" in error_of(message([block(RED)], plain_server))
    bad = message([{"type": "image", "source": {"type": "file", "file_id": "f"}}])
    assert error_of(bad) == ('messages[0].content[0].source must be {"type": "base64", "media_type", "data"} or '
                             '{"type": "url", "url"}')
    assert "remote image URLs are not fetched" in error_of(
        message([{"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]))


def test_embedding_with_an_image(server, plain_server):
    def embed(data: bytes) -> list[float]:
        r = server.post("/embedding", json={"content": "A photo: [img-4] of something",
                                            "image_data": [{"data": b64(data), "id": 4}]})
        assert r.status_code == 200, r.text
        return r.json()["embedding"]

    red, blue = embed(RED), embed(BLUE)
    assert red != blue and embed(RED) == red
    text = server.post("/embedding", json={"content": "A photo: [img-4] of something"}).json()["embedding"]
    assert text != red          # without image_data the marker is plain text
    r = plain_server.post("/embedding", json={"content": "x [img-4] y", "image_data": [{"data": b64(RED), "id": 4}]})
    assert "does not accept images" in error_of(r)


def test_infill_with_an_image(server):
    body = {"input_prefix": "def f(", "input_suffix": "):", "prompt": "see [img-2] here", "n_predict": 1,
            "temperature": 0, "n_probs": 5}
    red = server.post("/infill", json={**body, "image_data": [{"data": b64(RED), "id": 2}]})
    blue = server.post("/infill", json={**body, "image_data": [{"data": b64(BLUE), "id": 2}]})
    assert red.status_code == 200 and blue.status_code == 200, red.text + blue.text
    assert red.json()["tokens_evaluated"] >= N_IMAGE + 5
    assert top_probs(red.json()) != top_probs(blue.json())
    prompt = logged_prompts(server)[-1]
    assert prompt[0] == PRE and MID in prompt and sum(t < 0 for t in prompt) == N_IMAGE
    assert prompt.index(MID) < min(i for i, t in enumerate(prompt) if t < 0)


# --- bad input ---------------------------------------------------------------------------

def _post_images(server, prompt, image_data):
    return server.post("/completion", json={"prompt": prompt, "n_predict": 1, "image_data": image_data})


def test_every_bad_image_input_is_a_400_naming_it(server):
    ok = b64(RED)
    cases = [
        ("USER:[img-5] hi", [{"data": ok, "id": 6}], "[img-5]"),                    # marker without data
        ("USER:[img-5] hi", [{"data": ok, "id": 5}, {"data": ok, "id": 9}], "id 9"),  # data without a marker
        ("USER:[img-5] hi", [{"data": b64(b"not an image at all"), "id": 5}],
         "image id 5: not a PNG, JPEG, GIF or BMP image"),
        ("USER:[img-5] hi", [{"data": b64(png_header(9000, 10)), "id": 5}], "image id 5 is 9000x10 pixels"),
        ("USER:[img-5] hi", [{"data": b64(png_header(30, 30)), "id": 5}], "image id 5: not an image format"),
        ("USER:[img-5] hi", [{"data": b64(RED[:40]), "id": 5}], "id 5"),            # truncated PNG
        ("USER:[img-5] hi", [{"data": "***", "id": 5}], "id 5"),                    # not base64
        ("USER:[img-5] hi", [{"data": "", "id": 5}], "id 5"),                       # empty
        ("USER:[img-5] hi", [{"data": ok}], "image_data[0].id"),                    # no id
        ("USER:[img-5] hi", [{"data": ok, "id": 5}, {"data": ok, "id": 5}], "two images with id 5"),
        ("USER:[img-5] hi", {"data": ok, "id": 5}, "'image_data' must be an array"),
        ("USER:[img-5]", [{"data": ok, "id": 5}], "ends with an image"),            # no text after the image
        (["USER:[img-5] hi"], [{"data": ok, "id": 5}], "must be a string"),
        ("USER:<__media__>[img-5] hi", [{"data": ok, "id": 5}], "reserves for images"),
        ("x" * 10 + "[img-1]" * 17, [{"data": ok, "id": 1}], "more than 16"),
    ]
    for prompt, image_data, needle in cases:
        message = error_of(_post_images(server, prompt, image_data))
        assert needle in message, (needle, message)
    r = server.post("/completion", json={"prompt": "hi " * 200 + "[img-1][img-2][img-3] ok", "n_predict": 1,
                                         "image_data": [{"data": ok, "id": i} for i in (1, 2, 3)],
                                         "cache_prompt": False})
    assert r.status_code == 200, r.text       # fits the slot of 512
    long = "hi " * 500 + "[img-1] ok"
    assert "does not fit" in error_of(_post_images(server, long, [{"data": ok, "id": 1}]))
    assert server.get("/health").json()["slots_idle"] == 2


def test_bad_chat_images_are_400(server):
    def chat(part):
        return server.post("/v1/chat/completions", json={"max_tokens": 1, "messages": [
            {"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]})

    remote = chat({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}})
    assert "remote image URLs are not fetched" in error_of(remote)
    assert "messages[0].content[1]" in error_of(chat({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@"}}))
    assert "messages[0].content[1]" in error_of(chat({"type": "image_url",
                                                      "image_url": {"url": "data:image/png;base64," + b64(b"xx")}}))
    assert "data URL" in error_of(chat({"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}))
    assert "image_url" in error_of(chat({"type": "image_url", "image_url": "data:image/png;base64," + b64(RED)}))
    assert server.get("/health").json()["slots_idle"] == 2


def test_without_mmproj_every_image_input_is_400(plain_server):
    data = [{"data": b64(RED), "id": 1}]
    for path, body in (("/completion", {"prompt": "a [img-1] b", "image_data": data}),
                       ("/infill", {"input_prefix": "a", "prompt": "[img-1] b", "image_data": data}),
                       ("/embedding", {"content": "a [img-1] b", "image_data": data}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": [
                           {"type": "image_url", "image_url": {"url": "data:image/png;base64," + b64(RED)}}]}]})):
        assert "this model does not accept images" in error_of(plain_server.post(path, json=body)), path
    # an empty image_data is no image at all
    r = plain_server.post("/completion", json={"prompt": "a [img-1] b", "image_data": [], "n_predict": 1})
    assert r.status_code == 200, r.text
