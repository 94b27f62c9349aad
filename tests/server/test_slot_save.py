"""POST /slots/{id}?action=save|restore|erase: round trip, result fields, path safety, bad files."""
from __future__ import annotations

import os
import struct

import pytest

PROMPT = ("Here is a short story about a lighthouse keeper who lived alone on a rocky island, "
          "far from the mainland, with only a cat for company. One stormy night,")
N_PREDICT = 8


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("slots")
    d = root / "saves"
    d.mkdir()
    (root / "outside").mkdir()
    return d


@pytest.fixture(scope="module")
def server(server_factory, save_dir):
    return server_factory("-c", "512", "-np", "2", "-t", "1", "--slot-save-path", str(save_dir))


def complete(server, prompt=PROMPT, **body):
    r = server.post("/completion", json={"prompt": prompt, "n_predict": N_PREDICT, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def action(server, id_slot, act, filename=None, **kw):
    body = {} if filename is None else {"filename": filename}
    return server.post(f"/slots/{id_slot}?action={act}", json=body, **kw)


def ok(r) -> dict:
    assert r.status_code == 200, r.text
    return r.json()


def files(d) -> set[str]:
    return set(os.listdir(d))


def test_round_trip_reuses_the_restored_prefix(server, save_dir):
    cached = dict(cache_prompt=True, id_slot=0)
    first = complete(server, **cached)
    saved = ok(action(server, 0, "save", "story.bin"))
    assert saved["n_saved"] == first["tokens_cached"] > 0

    # the continuation as it is without ever erasing the slot
    prompt2 = PROMPT + first["content"]
    ref = complete(server, prompt2, **cached)
    assert ref["timings"]["prompt_n"] < ref["tokens_evaluated"]          # the prefix was reused

    # erased: the same request evaluates its whole prompt
    assert ok(action(server, 0, "erase"))["n_erased"] > 0
    cold = complete(server, prompt2, **cached)
    assert cold["timings"]["prompt_n"] == cold["tokens_evaluated"]
    # (its text may differ from ref's: a prompt decoded in one batch is not bit-identical to
    # the same tokens decoded one by one while generating, so greedy picks can diverge)

    # restored: the prefix is back, and so are the greedy tokens
    restored = ok(action(server, 0, "restore", "story.bin"))
    assert restored["n_restored"] == saved["n_saved"]
    again = complete(server, prompt2, **cached)
    assert again["content"] == ref["content"]
    assert again["timings"]["prompt_n"] == ref["timings"]["prompt_n"]
    assert again["tokens_cached"] == ref["tokens_cached"]


def test_restore_into_another_slot(server):
    first = complete(server, cache_prompt=True, id_slot=0)
    ok(action(server, 0, "save", "slot0.bin"))
    prompt2 = PROMPT + first["content"]
    ok(action(server, 1, "restore", "slot0.bin"))
    res = complete(server, prompt2, cache_prompt=True, id_slot=1)
    assert res["id_slot"] == 1
    assert res["timings"]["prompt_n"] < res["tokens_evaluated"]
    # slot 0 still holds the saved state: continuing there gives the same tokens
    assert res["content"] == complete(server, prompt2, cache_prompt=True, id_slot=0)["content"]


def test_result_fields(server, save_dir):
    complete(server, cache_prompt=True, id_slot=1)
    saved = ok(action(server, 1, "save", "fields.bin"))
    assert set(saved) == {"id_slot", "filename", "n_saved", "n_written", "timings"}
    assert set(saved["timings"]) == {"save_ms"}
    assert saved["id_slot"] == 1 and saved["filename"] == "fields.bin"
    assert saved["n_written"] == os.path.getsize(save_dir / "fields.bin")
    assert saved["timings"]["save_ms"] > 0

    restored = ok(action(server, 0, "restore", "fields.bin"))
    assert set(restored) == {"id_slot", "filename", "n_restored", "n_read", "timings"}
    assert set(restored["timings"]) == {"restore_ms"}
    assert restored["id_slot"] == 0 and restored["filename"] == "fields.bin"
    assert restored["n_restored"] == saved["n_saved"]
    assert restored["n_read"] == saved["n_written"]
    assert restored["timings"]["restore_ms"] > 0

    erased = ok(action(server, 0, "erase"))
    assert erased == {"id_slot": 0, "n_erased": saved["n_saved"]}
    assert ok(action(server, 0, "erase")) == {"id_slot": 0, "n_erased": 0}


BAD_NAMES = ["../x", "../outside/x", "/etc/passwd", "/tmp/x", "a/b", "", ".", "..", ".hidden", "x" * 300,
             "a\\b", "x\x00y", "caf\u00e9.bin", " ", "x\ny"]


@pytest.mark.parametrize("act", ["save", "restore"])
def test_bad_filenames_are_400(server, save_dir, act):
    outside = save_dir.parent / "outside"
    before, before_outside, before_root = files(save_dir), files(outside), files(save_dir.parent)
    passwd = os.stat("/etc/passwd")
    for name in BAD_NAMES:
        r = action(server, 0, act, name)
        assert r.status_code == 400, (name, r.status_code, r.text)
        err = r.json()["error"]
        assert err["code"] == 400 and err["type"] == "invalid_request_error"
    for body in ({}, {"filename": 7}, {"filename": None}, {"filename": ["a"]}):
        r = server.post(f"/slots/0?action={act}", json=body)
        assert r.status_code == 400, (body, r.text)
    assert server.post(f"/slots/0?action={act}", data=b"{not json").status_code == 400
    assert files(save_dir) == before
    assert files(outside) == before_outside and files(save_dir.parent) == before_root
    assert os.stat("/etc/passwd").st_mtime == passwd.st_mtime


def test_symlink_out_of_the_directory_is_refused(server, save_dir):
    outside = save_dir.parent / "outside"
    target = outside / "target.bin"
    (save_dir / "link.bin").symlink_to(target)
    try:
        assert action(server, 0, "save", "link.bin").status_code == 400
        assert not target.exists() and files(outside) == set()
        target.write_bytes(b"not a slot file")
        assert action(server, 0, "restore", "link.bin").status_code == 400
        assert target.read_bytes() == b"not a slot file"
    finally:
        (save_dir / "link.bin").unlink()
        if target.exists():
            target.unlink()


def test_restore_missing_file_is_404(server):
    r = action(server, 0, "restore", "never-saved.bin")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404


def corrupt_files(save_dir) -> dict[str, bytes]:
    good = (save_dir / "story.bin").read_bytes() if (save_dir / "story.bin").exists() else b""
    return {
        "random.bin": os.urandom(4096),
        "empty.bin": b"",
        "truncated.bin": good[: len(good) // 2] if good else os.urandom(64),
        # a plausible header (magic 'ggsq', version 2) claiming far more tokens than a slot holds
        "huge-count.bin": struct.pack("<III", 0x67677371, 2, 1 << 30) + os.urandom(256),
        "short-header.bin": struct.pack("<II", 0x67677371, 2) + struct.pack("<I", 3) + b"\x01\x00",
    }


def test_corrupt_files_are_400_and_the_slot_still_works(server, save_dir):
    reference = complete(server, id_slot=1)["content"]
    for name, data in corrupt_files(save_dir).items():
        (save_dir / name).write_bytes(data)
        r = action(server, 0, "restore", name)
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert r.json()["error"]["type"] == "invalid_request_error"
        # the slot is empty, usable, and gives the normal result
        res = complete(server, cache_prompt=True, id_slot=0)
        assert res["content"] == reference, name
        assert res["timings"]["prompt_n"] == res["tokens_evaluated"], name
    assert ok(server.get("/health"))["status"] == "ok"


def test_id_slot_out_of_range_is_400(server):
    for act in ("save", "restore", "erase"):
        for idx in (2, 99, 10**30):
            r = action(server, idx, act, "x.bin")
            assert r.status_code == 400, (act, idx, r.text)
            assert r.json()["error"]["type"] == "invalid_request_error"


def test_unknown_action_is_400(server):
    assert action(server, 0, "explode", "x.bin").status_code == 400
    assert server.post("/slots/0", json={"filename": "x.bin"}).status_code == 400


def test_no_temp_files_left(server, save_dir):
    complete(server, cache_prompt=True, id_slot=0)
    for i in range(3):
        ok(action(server, 0, "save", f"t{i}.bin"))
    ok(action(server, 0, "save", "t0.bin"))          # overwrite in place
    (save_dir / "taken.bin").mkdir()                 # a name the server cannot replace
    try:
        r = action(server, 0, "save", "taken.bin")
        assert r.status_code >= 400
    finally:
        (save_dir / "taken.bin").rmdir()
    leftovers = [n for n in files(save_dir) if ".tmp" in n or n.startswith(".")]
    assert leftovers == []
    assert {"t0.bin", "t1.bin", "t2.bin"} <= files(save_dir)
    assert ok(server.get("/health"))["status"] == "ok"


def test_disabled_without_slot_save_path(server_factory):
    srv = server_factory("-c", "256")
    for act in ("save", "restore"):
        r = action(srv, 0, act, "x.bin")
        assert r.status_code == 501, r.text
        err = r.json()["error"]
        assert err["code"] == 501 and err["type"] == "not_supported_error"


def test_slot_actions_while_another_slot_generates(server):
    """Erase/save/restore of an idle slot while slot 0 decodes: the engine context is used by one thread
    at a time, so the generation is undisturbed and the restored slot is intact."""
    import threading

    first = complete(server, cache_prompt=True, id_slot=1)
    ok(action(server, 1, "save", "busy.bin"))
    result: dict = {}

    def generate() -> None:
        result["res"] = complete(server, "Count: 1, 2, 3,", id_slot=0, n_predict=48, ignore_eos=True)

    t = threading.Thread(target=generate)
    t.start()
    n = 0
    while t.is_alive():
        ok(action(server, 1, "erase"))
        ok(action(server, 1, "restore", "busy.bin"))
        ok(action(server, 1, "save", "busy2.bin"))
        n += 1
    t.join()
    assert n > 1
    assert result["res"]["tokens_predicted"] == 48
    again = complete(server, PROMPT + first["content"], cache_prompt=True, id_slot=1)
    assert again["timings"]["prompt_n"] < again["tokens_evaluated"]
    assert ok(server.get("/health"))["status"] == "ok"
