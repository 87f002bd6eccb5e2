"""A single-node Ray head on this machine, for development and for `shopgraph cluster submit`.

    shopgraph cluster up [--set cluster.ray.num_cpus=2]
    shopgraph cluster status
    shopgraph cluster down

`up` runs `ray start --head --block` in its own process group, detached, with the ports and
resources of `cluster.ray`, and records the group in a small state file next to Ray's session
directory. `down` ends exactly that process group. It does not call `ray stop`, which kills
every Ray process of the user on the machine, including other people's `ray.init()` sessions.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import RayConfig


class LocalClusterError(RuntimeError):
    """The local head cannot be started, reached or stopped; the message says what to do."""


@dataclass(frozen=True)
class HeadInfo:
    dashboard_url: str
    gcs_address: str
    client_address: str
    pid: int
    log_path: str


def dashboard_url(ray: RayConfig) -> str:
    host = "127.0.0.1" if ray.dashboard_host in ("0.0.0.0", "::") else ray.dashboard_host
    return f"http://{host}:{ray.dashboard_port}"


def _temp_dir(ray: RayConfig) -> Path:
    return Path(ray.temp_dir) if ray.temp_dir else Path(tempfile.gettempdir()) / "ray"


def state_path(ray: RayConfig) -> Path:
    return _temp_dir(ray) / f"shopgraph-head-{ray.gcs_port}.json"


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def auth_headers() -> dict[str, str]:
    """The bearer token header Ray's own clients send, when token authentication is on.

    Ray 2.60 turns token auth on for a head started while ~/.ray/auth_token exists (and
    `ray.init()` creates that file). This mirrors what `ray job submit` does on the client
    side; it enables the mode for this process, so JobSubmissionClient sends the token too.
    """
    from ray._private.authentication import authentication_token_setup as setup
    from ray._private.authentication.http_token_authentication import get_auth_headers_if_auth_enabled

    quiet = logging.getLogger(setup.__name__)
    level, quiet.level = quiet.level, logging.ERROR  # its "token auth is enabled" warning is noise here
    try:
        setup.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)
    return dict(get_auth_headers_if_auth_enabled({}))


def get_json(url: str, timeout: float = 3.0) -> Any:
    request = urllib.request.Request(url, headers=auth_headers())
    with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (local dashboard URL from config)
        return json.loads(resp.read().decode())


def ray_version_at(url: str) -> str | None:
    """Ray version reported by the dashboard at `url`, or None when nothing answers there."""
    try:
        return str(get_json(f"{url}/api/version", timeout=2.0).get("ray_version"))
    except urllib.error.HTTPError as e:
        return f"unknown: HTTP {e.code} from {url}/api/version"
    except (OSError, ValueError, urllib.error.URLError):
        return None


def check_ports_free(ray: RayConfig) -> None:
    """Refuse to start when a Ray cluster (or anything) already holds one of the configured ports."""
    url = dashboard_url(ray)
    version = ray_version_at(url)
    if version is not None:
        raise LocalClusterError(
            f"a Ray cluster (Ray {version}) is already running with its dashboard at {url}; "
            f"use it (`shopgraph cluster status`, `shopgraph cluster submit`), stop it with `shopgraph cluster down`, "
            "or start another on free ports with --set cluster.ray.dashboard_port=... --set cluster.ray.gcs_port=..."
        )
    ports = {
        "cluster.ray.gcs_port": ray.gcs_port,
        "cluster.ray.dashboard_port": ray.dashboard_port,
        "cluster.ray.client_server_port": ray.client_server_port,
        "cluster.ray.dashboard_agent_listen_port": ray.dashboard_agent_listen_port,
    }
    if len(set(ports.values())) != len(ports):
        raise LocalClusterError(f"the ports in cluster.ray must differ, got {ports}")
    busy = [f"{key}={port}" for key, port in ports.items() if _port_in_use(port)]
    if busy:
        hint = " ".join(f"--set {b.split('=')[0]}=<free port>" for b in busy)
        raise LocalClusterError(
            f"port(s) already in use on this machine ({', '.join(busy)}), maybe by another Ray cluster; "
            f"stop that one or pick free ports: {hint}"
        )


def _ray_executable() -> str:
    beside = Path(sys.executable).parent / "ray"
    found = str(beside) if beside.is_file() else shutil.which("ray")
    if not found:
        raise LocalClusterError("the `ray` command is not installed beside this Python; install shopgraph with scripts/setup.sh")
    return found


def start_command(ray: RayConfig) -> list[str]:
    cmd = [
        _ray_executable(), "start", "--head", "--block", "--disable-usage-stats",
        f"--port={ray.gcs_port}",
        "--include-dashboard=true",
        f"--dashboard-host={ray.dashboard_host}",
        f"--dashboard-port={ray.dashboard_port}",
        f"--ray-client-server-port={ray.client_server_port}",
        f"--dashboard-agent-listen-port={ray.dashboard_agent_listen_port}",
    ]  # fmt: skip
    if ray.num_cpus is not None:
        cmd.append(f"--num-cpus={ray.num_cpus}")
    if ray.num_gpus is not None:
        cmd.append(f"--num-gpus={ray.num_gpus}")
    if ray.object_store_memory_mb is not None:
        cmd.append(f"--object-store-memory={ray.object_store_memory_mb * 2**20}")
    if ray.temp_dir:
        cmd.append(f"--temp-dir={ray.temp_dir}")
    return cmd


def start_head(ray: RayConfig, timeout: float = 90.0, env: dict[str, str] | None = None) -> HeadInfo:
    """Start the head and wait until its dashboard answers; raise LocalClusterError otherwise.

    `env`: extra environment of the Ray processes (e.g. `serve.http.ray_env()`); the caller's wins.
    """
    check_ports_free(ray)
    state = state_path(ray)
    state.parent.mkdir(parents=True, exist_ok=True)
    log_path = state.with_suffix(".log")
    # The job driver runs `python -m ...` through the head's PATH: put this venv's python first.
    env = {**(env or {}), **os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(start_command(ray), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    url = dashboard_url(ray)
    info = HeadInfo(url, f"127.0.0.1:{ray.gcs_port}", f"ray://127.0.0.1:{ray.client_server_port}", proc.pid, str(log_path))
    state.write_text(json.dumps(info.__dict__))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            state.unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise LocalClusterError(f"`ray start` exited with code {proc.returncode}; its log ({log_path}) ends with:\n{tail}")
        if _jobs_api_ready(url):
            return info
        time.sleep(0.5)
    _kill_group(proc.pid)
    state.unlink(missing_ok=True)
    raise LocalClusterError(f"the Ray head did not answer at {url} within {timeout:.0f}s; see {log_path}")


def _jobs_api_ready(url: str) -> bool:
    """The job API answers and the head node has registered (the dashboard comes up a bit earlier)."""
    try:
        get_json(f"{url}/api/jobs/", timeout=2.0)
        nodes = get_json(f"{url}/api/v0/nodes?limit=10", timeout=5.0)["data"]["result"]["result"]
        return any(n.get("state") == "ALIVE" for n in nodes)
    except (OSError, ValueError, KeyError, TypeError, urllib.error.URLError):
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0); reap it if it is ours.
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        return True


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM the head's process group (ray start --block, GCS, raylet, dashboard), then SIGKILL.

    Like `ray stop` (SIGTERM, grace period, SIGKILL) with a shorter grace: the raylet would
    otherwise drain for up to 30 s, and a local head holds nothing that outlives it.
    Workers run in their own sessions and exit when their raylet is gone.
    """
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _alive(pgid)  # reaps the leader when it is our child
        if not _group_alive(pgid):
            return
        time.sleep(0.3)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def read_state(ray: RayConfig) -> dict[str, Any] | None:
    path = state_path(ray)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        path.unlink(missing_ok=True)
        return None


def stop_head(ray: RayConfig) -> str:
    """Stop the head that `start_head` started with this config; return what was done."""
    state = read_state(ray)
    url = dashboard_url(ray)
    if state is None:
        if ray_version_at(url) is not None:
            raise LocalClusterError(
                f"the Ray cluster at {url} was not started by `shopgraph cluster up` with this config; "
                "stop it the way it was started (`ray stop` stops every Ray process of your user on this machine)"
            )
        return f"no Ray head started by shopgraph on these ports (dashboard {url}); nothing to stop"
    _kill_group(int(state["pid"]))
    state_path(ray).unlink(missing_ok=True)
    return f"stopped the Ray head at {state['dashboard_url']} (process group {state['pid']})"
