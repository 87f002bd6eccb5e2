"""bench/events_ingest.py still runs against the current app (a benchmark nobody can run measures
nothing): a two-second ingest with a kill and restart of the server mid-way, on SQLite, must
acknowledge events and lose or double none. The figures themselves belong to the benchmark.

    pytest -q tests/bench/test_events_ingest.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_ingest_benchmark_runs_and_loses_nothing_across_a_kill():
    out = subprocess.run(
        [sys.executable, str(REPO / "bench" / "events_ingest.py"), "--duration", "3", "--kill-after", "1",
         "--clients", "2", "--rate", "500", "--fresh-trials", "1"],
        capture_output=True, text=True, timeout=240, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    ingest = result["ingest"]
    assert ingest["killed_and_restarted"] and ingest["events_acknowledged"] > 0
    assert ingest["lost_or_doubled"] == 0 and ingest["rows_in_db"] == ingest["events_acknowledged"]
    assert set(result["targets"]) >= {"events_per_s>=2000", "batch_p99_ms<=100", "zero_lost", "freshness_ms<=1000"}
