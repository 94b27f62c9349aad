"""The console chat clients tools/chat.mjs (Node, no dependencies) and tools/chat.sh (bash, curl,
jq), driven non-interactively (questions on stdin) against the real server with an API key.
The server runs with -v, so its log holds each request the client sent: the test checks the
conversation they build and that each printed answer is what the server streamed."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import wait_for

TOOLS = Path(__file__).resolve().parents[2] / "tools"
KEY = "chat-client-key"
CLIENTS = {"chat.mjs": ["/usr/bin/node", str(TOOLS / "chat.mjs")], "chat.sh": ["bash", str(TOOLS / "chat.sh")]}
QUESTIONS = ["What is the capital of France?", "And what is the capital of Italy?"]


@pytest.fixture(scope="module")
def server(server_factory):
    return server_factory("-c", "2048", "--log-format", "json", "-v", "--api-key", KEY)


def logged_completion_requests(server) -> list[dict]:
    out = []
    for line in server.log().splitlines():
        try:
            msg = json.loads(line)["msg"]
        except (ValueError, KeyError):
            continue
        if msg.startswith("request POST /completion: "):
            out.append(json.loads(msg.split(": ", 1)[1]))
    return out


def run_client(name: str, server, stdin: str, key: str = KEY) -> subprocess.CompletedProcess:
    env = {**os.environ, "API_URL": server.url, "API_KEY": key, "N_PREDICT": "24", "TEMPERATURE": "0"}
    return subprocess.run(CLIENTS[name], input=stdin, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_streams_a_conversation(name, server):
    before = len(logged_completion_requests(server))
    proc = run_client(name, server, "\n".join(QUESTIONS) + "\n")
    assert proc.returncode == 0, proc.stderr
    answers = proc.stdout.split("\n")
    assert answers[-1] == "" and len(answers) >= 3
    wait_for(lambda: len(logged_completion_requests(server)) >= before + 2, "both requests in the server's log")
    first, second = logged_completion_requests(server)[before:before + 2]
    for body, question in ((first, QUESTIONS[0]), (second, QUESTIONS[1])):
        assert body["stream"] is True and body["n_predict"] == 24 and body["temperature"] == 0
        assert body["stop"] == ["\n### Human:"] and body["n_keep"] > 10
        assert body["prompt"].endswith(f"### Human: {question}\n### Assistant:")
    # the printed answer is exactly what the server generates for that request
    replay = server.post("/completion", json={**first, "stream": False},
                         headers={"Authorization": f"Bearer {KEY}"}).json()["content"]
    assert replay.strip() and proc.stdout.startswith(replay + "\n")
    # the second request carries the first exchange: the conversation is remembered
    assert f"### Human: {QUESTIONS[0]}\n### Assistant: {replay.strip()}\n### Human: {QUESTIONS[1]}" in second["prompt"]


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_reports_a_refused_key_and_fails(name, server):
    proc = run_client(name, server, "Hello\n", key="wrong-key")
    assert proc.returncode != 0
    assert "401" in proc.stderr


@pytest.mark.parametrize("name", sorted(CLIENTS))
def test_client_without_questions_exits_cleanly(name, server):
    proc = run_client(name, server, "")
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
