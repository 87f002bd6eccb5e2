"""ruff is part of the suite: lint and format are checked on every run (config in pyproject.toml).

.venv/bin/ruff check . && .venv/bin/ruff format --check .    # the same, by hand
.venv/bin/ruff check --fix . && .venv/bin/ruff format .        # fix what it reports
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = str(RUFF) if RUFF.is_file() else shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed in this environment; run scripts/setup.sh (it is a dev dependency)")
    return subprocess.run([exe, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_lint_is_clean():
    out = _ruff("check", "--output-format", "concise", ".")
    assert out.returncode == 0, (
        f"ruff check found problems (fix: ruff check --fix .):\n{out.stdout[-4000:]}{out.stderr[-2000:]}"
    )


def test_ruff_format_is_clean():
    out = _ruff("format", "--check", ".")
    assert out.returncode == 0, f"files not formatted (fix: ruff format .):\n{out.stdout[-4000:]}{out.stderr[-2000:]}"
