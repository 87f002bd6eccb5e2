"""A throwaway PostgreSQL server in a temporary directory, for tests and benchmarks.

    with local_postgres() as url:   # postgresql+psycopg://shopgraph@127.0.0.1:<port>/shopgraph
        ...

Runs Debian's server binaries (`/usr/lib/postgresql/<version>/bin`, the `postgresql` package that
scripts/setup.sh installs) or whatever `pg_ctl` is on PATH: initdb, then pg_ctl on a free port,
listening on 127.0.0.1 and a socket in the same directory; stopped and removed on exit.
PostgreSQL refuses to run as root: as root, the server runs as `nobody` (runuser).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

RUN_AS = "nobody"


def pg_bindir() -> Path | None:
    """The newest installed server's bin directory, or None (why: `missing_reason()`)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path and shutil.which("initdb") else None


def missing_reason() -> str | None:
    if pg_bindir() is None:
        return "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's `postgresql` (scripts/setup.sh)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser`: PostgreSQL cannot be started as an unprivileged user"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(args: list[str], as_user: str | None) -> None:
    cmd = ["runuser", "-u", as_user, "--", *args] if as_user else args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if out.returncode:
        raise RuntimeError(
            f"{' '.join(args[:2])} failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}"
        )


@contextlib.contextmanager
def local_postgres(*, fsync: bool = True) -> Iterator[str]:
    """Start a server, yield its SQLAlchemy URL (database `shopgraph`, user `shopgraph`, trust
    auth on 127.0.0.1 only), stop it. `fsync=False` for tests: faster, not crash-safe."""
    why = missing_reason()
    if why:
        raise RuntimeError(why)
    bindir = pg_bindir()
    as_user = RUN_AS if os.geteuid() == 0 else None
    home = Path(tempfile.mkdtemp(prefix="shopgraph-pg-"))
    if as_user:
        shutil.chown(home, user=as_user)
    data, port = home / "data", _free_port()
    started = False
    try:
        _run(
            [str(bindir / "initdb"), "-D", str(data), "-U", "shopgraph", "-A", "trust", "-E", "UTF8", "--no-sync"],
            as_user,
        )
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync={'on' if fsync else 'off'}"
        options += " -c max_connections=200"
        _run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "log"), "-o", options, "-w", "start"], as_user)
        started = True
        _run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "shopgraph", "shopgraph"], as_user)
        yield f"postgresql+psycopg://shopgraph@127.0.0.1:{port}/shopgraph"
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], as_user)
        shutil.rmtree(home, ignore_errors=True)


def create_database(url: str, name: str) -> str:
    """A new empty database on the server of `url`; returns its URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return make_url(url).set(database=name).render_as_string(hide_password=False)
