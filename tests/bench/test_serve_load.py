"""bench/serve_load.py's load generator (`--client`) against a small local HTTP server: every
request is counted once as answered, degraded (and by which stage) or refused with its status,
and the generator reports its own send lag and CPU, so a run where it fell behind shows it.

    pytest -q tests/bench/test_serve_load.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class _Shop(BaseHTTPRequestHandler):
    """Answers by the body's `k`: 1 = ok, 2 = ok without the ranker, 3 = 503 (shed)."""

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, payload = {1: (200, {"items": [], "degraded": []}), 2: (200, {"items": [], "degraded": ["ranker"]}),
                           3: (503, {"error": "shed"})}[body["k"]]  # fmt: skip
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def _client(url: str, bodies: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "bench" / "serve_load.py"), "--client", "--url", url, "--bodies", str(bodies)]
    return subprocess.run([*cmd, *extra], capture_output=True, text=True, timeout=120, cwd=REPO)


def test_the_generator_counts_answers_degraded_and_shed_requests_and_its_own_lag(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Shop)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bodies = tmp_path / "bodies.json"
        bodies.write_text(json.dumps([{"k": 1}] * 30 + [{"k": 2}] * 10 + [{"k": 3}] * 5))
        out = _client(f"http://127.0.0.1:{server.server_address[1]}", bodies, "--rate", "200")
    finally:
        server.shutdown()
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert (got["offered"], got["ok"], got["errors"], got["error_kinds"]) == (45, 40, 5, {"http_503": 5})
    assert got["degraded"] == {"ranker": 10} and got["refused_503_latency_ms"]["n"] == 5
    assert got["latency_ms"]["n"] == 40 and got["client"]["send_lag_ms"]["n"] == 45
    assert got["client"]["cpu_ms_per_request"] > 0


def test_the_generator_only_loads_this_machine(tmp_path):
    out = _client("http://example.com:80", tmp_path / "none.json")
    assert out.returncode == 2 and "--client needs --url http://127.0.0.1:PORT" in out.stderr
