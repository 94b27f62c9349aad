"""tools/soak.py, briefly: a mix of every request kind from several clients, then no 5xx, no
unexpected status, nothing stuck, no leak (the README reports a 30-minute run)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_a_short_soak_passes():
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "soak.py"), "--clients", "4", "--seconds", "60",
                          "--interval", "3", "--", "-t", "1"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "OK: no 5xx" in res.stdout
    for kind in ("stream", "complete", "chat", "chat_stream", "embed", "slots", "bad", "vanish"):
        assert f"\n  {kind} " in res.stdout, kind
