"""The converted SmolLM2 directory: a normal HF checkpoint that transformers and vLLM both load."""

from __future__ import annotations

import json

import pytest

from core.manifest import verify_dir
from ml.base_model import GENERATOR_NAME, check_generator_dir
from tests.conftest import run_cli

pytestmark = pytest.mark.slow

PROMPT = "Describe a red wooden toy train for children in two sentences."


def test_converted_dir_is_a_plain_safetensors_checkpoint(models_dir):
    model_dir = models_dir / GENERATOR_NAME
    manifest = verify_dir(model_dir, full=True)
    assert manifest["meta"]["architecture"] == "LlamaForCausalLM"
    assert 130e6 < manifest["meta"]["parameters"] < 140e6
    files = set(manifest["files"])
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert not any(f.endswith(".gguf") for f in files)
    config = json.loads((model_dir / "config.json").read_text())
    assert "gguf" not in json.dumps(config).lower()
    assert check_generator_dir(model_dir) == model_dir


def test_transformers_generates_from_the_local_dir(models_dir):
    from ml.llm import generate_hf

    (text,) = generate_hf(models_dir / GENERATOR_NAME, [[{"role": "user", "content": PROMPT}]], max_tokens=48)
    assert len(text.split()) >= 8, text
    assert "train" in text.lower(), text


def test_vllm_generates_two_sentences_from_the_local_dir(models_dir):
    """The production path: vLLM (CPU build here) loads the converted directory, no network."""
    result = run_cli(
        "models",
        "generate",
        PROMPT,
        "--engine",
        "vllm",
        "--max-tokens",
        "96",
        "--set",
        f"models.dir={models_dir}",
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout.strip()
    sentences = [s for s in text.replace("!", ".").split(".") if len(s.split()) >= 3]
    assert len(sentences) >= 2, text
    assert "train" in text.lower(), text


def test_half_written_model_dir_is_refused(tmp_path):
    from core.manifest import IncompleteDirError

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "shopgraph-manifest.json").write_text(
        json.dumps({"files": {"model.safetensors": {"size": 1, "sha256": "0"}}})
    )
    with pytest.raises(IncompleteDirError, match="missing"):
        check_generator_dir(tmp_path)


def test_tuned_generator_is_the_base_with_the_committed_adapter_merged(models_dir):
    from safetensors.torch import load_file

    from core.manifest import read_manifest, sha256_file
    from ml.base_model import ADAPTER_DIR, TUNED_NAME, prepare_generator_tuned

    tuned = models_dir / TUNED_NAME
    manifest = verify_dir(tuned, full=True)
    assert manifest["meta"]["adapter_sha256"] == sha256_file(ADAPTER_DIR / "adapter_model.safetensors")
    assert check_generator_dir(tuned) == tuned
    # the adapter's training record ships beside it, and the adapter stays small enough to commit
    training = json.loads((ADAPTER_DIR / "training_manifest.json").read_text())
    assert training["hyperparameters"]["lora"]["enabled"] and training["metrics"]["steps"] >= 1
    assert (ADAPTER_DIR / "adapter_model.safetensors").stat().st_size <= 5 * 1024 * 1024
    base = load_file(str(models_dir / GENERATOR_NAME / "model.safetensors"))
    merged = load_file(str(tuned / "model.safetensors"))
    changed = [k for k in base if "q_proj" in k and not (base[k] == merged[k]).all()]
    assert changed, "the adapter changed no attention weight"
    # idempotent: a verified directory is kept
    assert prepare_generator_tuned(models_dir) == (tuned, False)
    assert read_manifest(tuned)["meta"]["name"] == TUNED_NAME
