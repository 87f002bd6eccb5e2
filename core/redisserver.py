"""A throwaway Redis server in a temporary directory, for tests and benchmarks.

    with local_redis() as url:   # redis://127.0.0.1:<port>/0
        ...

Runs Debian's `redis-server` (the package scripts/setup.sh installs) on a free port on 127.0.0.1,
with its working directory (and any dump) in a temporary directory; stopped and removed on exit.
No persistence unless asked (`appendonly=True`): the content cache and tests need none.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from core.store.pgserver import _free_port


def missing_reason() -> str | None:
    if shutil.which("redis-server") is None:
        return "redis-server not found; install Debian's `redis-server` (scripts/setup.sh)"
    return None


class RedisServer:
    """One redis-server process; `stop()` / `start()` again on the same port (tests of an outage)."""

    def __init__(self, *, appendonly: bool = False):
        self.home = Path(tempfile.mkdtemp(prefix="shopgraph-redis-"))
        self.port = _free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.home),
            "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--protected-mode", "yes",
        ]  # fmt: skip
        log = open(self.home / "log", "ab")  # noqa: SIM115 - the server keeps it
        self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited ({self.proc.returncode}): {(self.home / 'log').read_text()[-500:]}"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer PING within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@contextlib.contextmanager
def local_redis(*, appendonly: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(appendonly=appendonly)
    try:
        server.start()
        yield server
    finally:
        server.close()
