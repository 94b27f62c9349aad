"""Small native endpoints: /health, /props, /tokenize, /detokenize, /slots."""
from __future__ import annotations

import os
import re
import time

from llamacy.api.completion import generation_settings, slot_json, token_pieces
from llamacy.api.fields import get_bool, get_str
from llamacy.errors import InvalidRequestError, NotFoundError, NotSupportedError, UnavailableError
from llamacy.server.base import BaseHandler
from llamacy.server.slot_files import save_slot_file


def slots_json(st) -> list[dict]:
    return [slot_json(snap, model=st.model_name, n_predict=st.config.n_predict, defaults=st.sampling_defaults)
            for snap in st.scheduler.slot_snapshots()]


class HealthHandler(BaseHandler):
    public = True

    def get(self) -> None:
        st = self.state
        if st.status == "loading model":
            return self.write_json({"status": "loading model"}, 503)
        error = st.error
        if error is not None:
            return self.write_json({"status": "error", "error": error}, 500)
        sch = st.scheduler
        idle, busy = sch.n_idle, sch.n_processing
        out = {"status": "ok" if idle else "no slot available", "slots_idle": idle, "slots_processing": busy}
        if self.get_query_argument("include_slots", None) is not None and st.config.slots_endpoint:
            out["slots"] = slots_json(st)
        status = 200
        if not idle and self.get_query_argument("fail_on_no_slot", None) is not None:
            status = 503
        self.write_json(out, status)


class PropsHandler(BaseHandler):
    def get(self) -> None:
        st = self.state
        sch = st.require_ready()
        default_settings = generation_settings(None, model=st.model_name, n_ctx=sch.n_ctx_slot,
                                               n_predict=st.config.n_predict, defaults=st.sampling_defaults)
        # today's llama-server nests the sampling settings under "params" (the spec's flat fields stay)
        default_settings["params"] = dict(default_settings)
        self.write_json({
            "model_path": st.model_path,
            "assistant_name": st.system_prompt.assistant_name,
            "user_name": st.system_prompt.anti_prompt,
            "default_generation_settings": default_settings,
            "total_slots": sch.n_parallel,
            "modalities": {"vision": st.vision is not None, "audio": False},   # images with --mmproj
            "chat_template": st.chat_template.source if st.chat_template else "",
            "cors_proxy_enabled": st.config.ui_mcp_proxy,     # /cors-proxy (--ui-mcp-proxy)
            "engine": st.engine_info,     # backends, the CPU variant in use, devices (llamacy's addition)
        })


class TokenizeHandler(BaseHandler):
    def post(self) -> None:
        st = self.state
        st.require_ready()
        body = self.json_body()
        content = body.get("content")
        if not isinstance(content, str):
            raise InvalidRequestError("'content' must be a string")
        add_special = get_bool(body, "add_special", False)
        vocab = st.model.vocab
        tokens = vocab.tokenize(content, add_special=add_special, parse_special=True)
        if get_bool(body, "with_pieces", False):
            tokens = token_pieces(tokens, [vocab.token_to_piece(t, True) for t in tokens])
        self.write_json({"tokens": tokens})


class DetokenizeHandler(BaseHandler):
    def post(self) -> None:
        st = self.state
        st.require_ready()
        body = self.json_body()
        tokens = body.get("tokens", [])
        if not isinstance(tokens, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            raise InvalidRequestError("'tokens' must be an array of token ids")
        n_vocab = st.model.vocab.n_vocab
        bad = [t for t in tokens if not 0 <= t < n_vocab]
        if bad:
            raise InvalidRequestError(f"'tokens' has id {bad[0]} out of range [0, {n_vocab})")
        self.write_json({"content": st.model.vocab.detokenize(tokens, unparse_special=True)})


class SlotsHandler(BaseHandler):
    def get(self) -> None:
        st = self.state
        if not st.config.slots_endpoint:
            raise NotSupportedError("This server does not support slots endpoint.")
        st.require_ready()
        self.write_json(slots_json(st))


_FILENAME = re.compile(r"[A-Za-z0-9._-]{1,200}")


def slot_file(save_dir: str, filename: str) -> str:
    """Resolve a client filename inside --slot-save-path, refusing anything that could escape it."""
    if not _FILENAME.fullmatch(filename) or filename in (".", "..") or filename.startswith("."):
        raise InvalidRequestError("Invalid filename: use letters, digits, '.', '_' and '-' only, no path")
    base = os.path.realpath(save_dir)
    path = os.path.realpath(os.path.join(base, filename))
    if os.path.dirname(path) != base:
        raise InvalidRequestError("Invalid filename")
    return path


class SlotActionHandler(BaseHandler):
    async def post(self, id_slot: str) -> None:
        st = self.state
        sch = st.require_ready()
        action = self.get_query_argument("action", "")
        idx = int(id_slot) if len(id_slot) <= 9 else -1
        if action not in ("save", "restore", "erase"):
            raise InvalidRequestError(f"Invalid action {action!r}: use save, restore or erase")
        if not st.config.slot_save_path:   # the spec: without it the slot management endpoints are off
            raise NotSupportedError("This server does not support slot actions (start it with --slot-save-path).")
        if not 0 <= idx < sch.n_parallel:
            raise InvalidRequestError(f"id_slot {idx} out of range [0, {sch.n_parallel})")
        # erase takes no field, but its body is checked as the others' is
        filename = get_str(self.json_body(), "filename", "")
        if action == "erase":
            n = await sch.erase_slot(idx)
            return self.write_json({"id_slot": idx, "n_erased": n})
        if not filename:
            raise InvalidRequestError("'filename' is required")
        path = slot_file(st.config.slot_save_path, filename)
        t0 = time.perf_counter()
        if action == "save":
            n_saved, n_written = await save_slot_file(sch, idx, path, filename)
            return self.write_json({"id_slot": idx, "filename": filename, "n_saved": n_saved, "n_written": n_written,
                                    "timings": {"save_ms": (time.perf_counter() - t0) * 1e3}})
        if not os.path.isfile(path):
            raise NotFoundError(f"slot file not found: {filename}")
        try:
            n_restored, n_read = await sch.restore_slot(idx, path)
        except (InvalidRequestError, UnavailableError):
            raise
        except Exception as exc:
            raise InvalidRequestError(f"Unable to restore slot from {filename}: not a valid slot file") from exc
        self.write_json({"id_slot": idx, "filename": filename, "n_restored": n_restored, "n_read": n_read,
                         "timings": {"restore_ms": (time.perf_counter() - t0) * 1e3}})


class OpenAPIHandler(BaseHandler):
    """GET /openapi.json: the OpenAPI 3.1 description of this API (open, like /health)."""

    public = True

    def get(self) -> None:
        from llamacy import __version__
        from llamacy.api.openapi import build
        self.write_json(build(version=__version__))
