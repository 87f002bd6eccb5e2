"""Free ports and a short temp dir for a Ray head started by a test, as `--set` overrides."""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

from cluster.local import free_ports


def head_overrides() -> list[str]:
    """Non-default ports (so the head does not collide with other Ray instances) and 2 CPUs."""
    gcs, dashboard, client, agent = free_ports(4)
    # Ray puts unix sockets under temp_dir: keep the path short (sun_path is 107 bytes).
    # Not created here: only a head that starts creates it (and its fixture removes it).
    temp_dir = Path(tempfile.gettempdir()) / f"sgray-{secrets.token_hex(4)}"
    return [
        "cluster.ray.num_cpus=2",
        f"cluster.ray.gcs_port={gcs}",
        f"cluster.ray.dashboard_port={dashboard}",
        f"cluster.ray.client_server_port={client}",
        f"cluster.ray.dashboard_agent_listen_port={agent}",
        f"cluster.ray.temp_dir={temp_dir}",
    ]
