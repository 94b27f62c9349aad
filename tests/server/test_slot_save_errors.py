"""Slot saves that cannot succeed — a directory in the way, no space, a read-only directory —
answer a status and message naming the failure, leave no file behind and the slot intact.

The save directory is a small tmpfs of its own (mounted here: the tests run as root, as the
README's test command does), so "no space left" is the real ENOSPC of a full filesystem.
"""
from __future__ import annotations

import os
import subprocess

import pytest

PROMPT = "The lighthouse keeper climbed the stairs every evening to light the lamp"


@pytest.fixture(scope="module")
def save_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("slot-fs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", "-l", str(d)], check=True)


@pytest.fixture(scope="module")
def server(server_factory, save_dir):
    return server_factory("-c", "512", "-np", "1", "-t", "1", "--slot-save-path", str(save_dir))


@pytest.fixture(scope="module")
def cached(server):
    r = server.post("/completion", json={"prompt": PROMPT, "n_predict": 4, "temperature": 0, "cache_prompt": True})
    assert r.status_code == 200, r.text
    return r.json()["tokens_cached"]


def save(server, filename):
    return server.post("/slots/0?action=save", json={"filename": filename})


def error(r, status) -> str:
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == status
    return r.json()["error"]["message"]


def assert_intact(server, save_dir, n_tokens):
    """No stray file, the slot idle, and its cache whole: a good save stores every token."""
    assert all(not name.startswith(".") for name in os.listdir(save_dir)), os.listdir(save_dir)
    assert server.get("/slots").json()[0]["state"] == 0
    r = save(server, "check.bin")
    assert r.status_code == 200, r.text
    assert r.json()["n_saved"] == n_tokens
    os.unlink(save_dir / "check.bin")


def test_a_directory_in_the_way_is_400(server, save_dir, cached):
    (save_dir / "taken.bin").mkdir()
    try:
        message = error(save(server, "taken.bin"), 400)
        assert "taken.bin" in message and "directory" in message
        assert_intact(server, save_dir, cached)
    finally:
        (save_dir / "taken.bin").rmdir()


def test_no_space_left_is_507(server, save_dir, cached):
    ballast = save_dir / "ballast"
    st = os.statvfs(save_dir)
    with open(ballast, "wb") as f:   # leave less room than a slot file needs
        f.write(b"\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
    try:
        message = error(save(server, "full.bin"), 507)
        assert "no space left" in message and "full.bin" in message
        assert not (save_dir / "full.bin").exists()
    finally:
        ballast.unlink()
    assert_intact(server, save_dir, cached)


def test_a_read_only_directory_is_500_naming_it(server, save_dir, cached):
    subprocess.run(["mount", "-o", "remount,ro", str(save_dir)], check=True)
    try:
        message = error(save(server, "ro.bin"), 500)
        assert "ro.bin" in message and "Read-only file system" in message
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(save_dir)], check=True)
    assert_intact(server, save_dir, cached)
