"""bench/store_read.py: the lean live-events read returns exactly what the statement-layer query
returns, on a real database; bad arguments stop it, naming the flag.

    pytest -q tests/bench/test_store_read.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "store_read.py"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)


def test_a_small_run_reads_the_same_rows_both_ways():
    out = _run("--users", "8", "--n", "5", "--served-batch", "10", "--served-batches", "2")
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["database"] == "sqlite" and got["events"] == 160 and got["same_rows"] is True
    for who in ("user_with_events", "user_without"):
        assert set(got[who]) == {"core_statement_us", "recent_events_us", "recent_events_in_thread_us"}
        assert all(v > 0 for v in got[who].values())
    served = got["served_writes"]  # both ways wrote every row: 3 writes of 10 each
    assert (
        served["rows_written"] == 60 and served["core_statement_us_per_row"] > 0 and served["add_served_us_per_row"] > 0
    )


def test_bad_arguments_name_the_flag():
    out = _run("--users", "2", "--n", "0")
    assert (
        out.returncode == 2
        and "--users must be at least 8, --n, --served-batch and --served-batches at least 1" in out.stderr
    )
    out = _run("--database", "mysql")
    assert out.returncode == 2 and "invalid choice: 'mysql'" in out.stderr
