"""The demo's console: its own short lines on the terminal, everything else in a log file.

    shopgraph demo            # stages, timings and sample answers here; engine/Ray/worker output in the log
    shopgraph demo --verbose  # everything on the terminal, as before

`demo_console(log_dir, verbose=False)` points this process's stdout and stderr (file
descriptors 1 and 2, so that C extensions, subprocesses it starts, Ray's forwarded worker
output and every Python logging handler follow) at `<log_dir>/demo-<time>.log`, and hands back
a `Console` that writes to a duplicate of the original terminal. On exit both descriptors are
restored. With `verbose=True` nothing is redirected and the console writes to stdout.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

TICK_S = 1.0  # elapsed-time refresh on a terminal
QUIET_TICK_S = 30.0  # "still running" line when the output is a pipe or file (CI), which cannot redraw


class Console:
    """Lines for the user; `step(label)` shows elapsed time while a long step runs."""

    def __init__(self, out: TextIO, log_path: Path | None, *, tty: bool) -> None:
        self.out = out
        self.log_path = log_path
        self.tty = tty
        self._lock = threading.Lock()

    def say(self, line: str = "") -> None:
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    @contextmanager
    def step(self, label: str) -> Iterator[None]:
        """Tick while the block runs: redrawn each second on a terminal, a line every 30 s otherwise."""
        started = time.monotonic()
        done = threading.Event()

        def tick() -> None:
            while not done.wait(TICK_S if self.tty else QUIET_TICK_S):
                elapsed = time.monotonic() - started
                with self._lock:
                    if self.tty:
                        self.out.write(f"\r    {label}: {elapsed:.0f}s elapsed\033[K")
                    else:
                        self.out.write(f"    {label}: still running ({elapsed:.0f}s)\n")
                    self.out.flush()

        ticker = threading.Thread(target=tick, name="shopgraph-console-ticker", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()
            if self.tty:
                with self._lock:
                    self.out.write("\r\033[K")
                    self.out.flush()


def log_file_name() -> str:
    return f"demo-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


@contextmanager
def demo_console(log_dir: Path, *, verbose: bool = False) -> Iterator[Console]:
    """A `Console` on the terminal, with all other output of this process sent to a new log file."""
    if verbose:
        yield Console(sys.stdout, None, tty=sys.stdout.isatty())
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = (log_dir / log_file_name()).resolve()
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    term = open(os.dup(saved_out), "w", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 -- closed below
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    for stream in (sys.stdout, sys.stderr):  # so the log reads in order while it is written
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    try:
        yield Console(term, log_path, tty=os.isatty(saved_out))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        term.close()
