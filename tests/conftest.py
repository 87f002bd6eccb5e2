"""Shared fixtures. Nothing here touches the network: hub access is switched off for the
whole session, so a test that tried to download a model would fail instead of hanging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHOPGRAPH_SHARED_DIR", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """Both embedded models, prepared once per session exactly as `shopgraph models prepare` does."""
    from data.encoder import prepare_encoder
    from train.base_model import prepare_generator_base

    root = tmp_path_factory.mktemp("models")
    prepare_generator_base(root)
    prepare_encoder(root)
    return root


def run_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run the installed `shopgraph` console script the way a user does."""
    exe = Path(sys.executable).parent / "shopgraph"
    return subprocess.run(
        [str(exe), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
