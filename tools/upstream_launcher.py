#!/usr/bin/env python3
"""The server llama.cpp's own test suite starts (its ``LLAMA_SERVER_BIN_PATH``), for
tools/upstream_suite.py: today's llama-server command line in, llamacy (or the reference
llama-server) out, on a model that exists here.

    upstream_launcher.py --target llamacy|llama-server [--llama-server PATH] -- ARGS...

The suite downloads its models from Hugging Face (``--hf-repo``/``--hf-file``/``--model-url``);
here every model is replaced — for both servers alike — by a local one: the FIM test model for
the infill preset, the test reranker for the reranker preset, the default SmolLM2 model for
everything else (paths in the environment: UPSTREAM_MODEL_DEFAULT, UPSTREAM_MODEL_FIM,
UPSTREAM_MODEL_RERANK). For llamacy, flags are then mapped onto its spellings (``MAPPED``),
dropped where they ask for something llamacy has no notion of (``DROPPED``: the test then
shows what is missing), and passed on unchanged otherwise.
"""
from __future__ import annotations

import argparse
import os
import sys

# Flags that name where the model comes from (each takes a value).
MODEL_FLAGS = ("-m", "--model", "-hf", "-hfr", "--hf-repo", "-hff", "--hf-file", "-mu", "--model-url")
# llama-server flags with no meaning for llamacy, and how many values each takes.
DROPPED = {
    "--offline": 0,             # nothing is downloaded here
    "--jinja": 0,               # llamacy always renders chat templates with Jinja
    "--no-jinja": 0,
    "--slots": 0,               # /slots is on by default in llamacy (the 2024 spec)
    "--kv-unified": 0,          # llamacy gives each slot its own n_ctx / n_parallel
    "--swa-full": 0,
    "--no-mmproj": 0,
    "--mmproj-url": 1,
    "--media-path": 1,
    "--cache-ram": 1,
    "--no-cache-idle-slots": 0,
    "--sleep-idle-seconds": 1,
    "--models-dir": 1,          # the router (several models) is not part of llamacy
    "--models-max": 1,
    "--models-preset": 1,
    "--no-models-autoload": 0,
    "--spec-type": 1,
    "--spec-draft-n-max": 1,
    "--spec-draft-n-min": 1,
    "--model-draft": 1,
    "--backend_sampling": 0,
    "--tools-runtime": 1,
    "--context-shift": 0,       # llamacy shifts the context whenever it fills (the 2024 spec)
}
# llama-server's agent features (built-in file/shell tools, MCP servers), which llamacy does not
# have, and how many values each takes. Enabling one makes llama-server's CORS default
# "localhost"; llamacy has that policy as --cors-origins localhost, so the launcher passes it
# (unless --cors-origins is given): the suite then checks the CORS policy itself.
AGENT_FLAGS = {"--tools": 1, "--mcp-servers-config": 1, "--mcp-servers-json": 1, "--agent": 0, "-ag": 0}


def model_for(args: list[str]) -> tuple[str | None, list[str]]:
    """The local model replacing the one ``args`` name (None: none named), and ``args`` without
    the model flags."""
    named: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in MODEL_FLAGS and i + 1 < len(args):
            named[args[i]] = args[i + 1]
            i += 2
            continue
        rest.append(args[i])
        i += 1
    if not named:
        return None, rest
    source = " ".join(named.values()).lower()
    if "infill" in source:
        return os.environ["UPSTREAM_MODEL_FIM"], rest
    if "reranker" in source:
        return os.environ["UPSTREAM_MODEL_RERANK"], rest
    return os.environ["UPSTREAM_MODEL_DEFAULT"], rest


def llamacy_args(args: list[str]) -> list[str]:
    """Today's llama-server flags in llamacy's spellings."""
    out: list[str] = []
    if any(a in AGENT_FLAGS for a in args) and "--cors-origins" not in args:
        out += ["--cors-origins", "localhost"]
    i = 0
    while i < len(args):
        flag = args[i]
        value = args[i + 1] if i + 1 < len(args) else None
        if flag in DROPPED:
            i += 1 + DROPPED[flag]
            continue
        if flag in AGENT_FLAGS:
            i += 1 + AGENT_FLAGS[flag]
            continue
        i += 1
        if flag == "--no-slots":
            out.append("--slots-endpoint-disable")
        elif flag in ("-fa", "--flash-attn"):          # today: on|off|auto; llamacy: a switch
            i += 1
            if value == "on":
                out.append("--flash-attn")
        elif flag == "--reasoning":                    # today: on|off|auto
            i += 1
            if value == "off":
                out += ["--reasoning-budget", "0"]
        elif flag == "--chat-template-file":           # llamacy's --chat-template takes the text
            i += 1
            with open(value, encoding="utf-8") as f:
                out += ["--chat-template", f.read()]
        else:
            out.append(flag)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=["llamacy", "llama-server"], required=True)
    ap.add_argument("--llama-server", help="llama-server binary (with --target llama-server)")
    ap.add_argument("--python", default=sys.executable, help="the Python that runs llamacy")
    opts = ap.parse_args(argv[:split])
    model, args = model_for(argv[split + 1:])
    if model is not None:
        args = ["--model", model, *args]
    if opts.target == "llama-server":
        cmd = [opts.llama_server, *args]
    else:
        cmd = [opts.python, "-m", "llamacy", "--log-format", "text", *llamacy_args(args)]
    sys.stdout.flush()
    os.execv(cmd[0], cmd)
    return 127


if __name__ == "__main__":
    sys.exit(main())
