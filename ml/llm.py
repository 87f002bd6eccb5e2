"""Run the generator LM: vLLM (production path) and HF `generate` (reference / fallback).

    shopgraph models generate "Describe a wooden train set in two sentences."

Both take chat messages and apply the model's own chat template, so a prompt means the same
thing to either engine. vLLM starts its engine in a spawned subprocess: callers that build
an engine from a script need an `if __name__ == "__main__":` guard.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from core.config.train import GeneratorEngineConfig

Messages = list[dict[str, str]]


def vllm_engine_kwargs(model_dir: str | Path, engine: GeneratorEngineConfig, *, device: str = "auto") -> dict[str, Any]:
    """vLLM `EngineArgs` for `model_dir`, from the typed engine config."""
    kwargs: dict[str, Any] = {
        "model": str(model_dir),
        "tokenizer": str(model_dir),
        "dtype": engine.dtype,
        "max_model_len": engine.max_model_len,
        "max_num_seqs": engine.max_num_seqs,
        "enforce_eager": engine.enforce_eager,
        "seed": 0,
    }
    if _on_gpu(device):
        kwargs["gpu_memory_utilization"] = engine.gpu_memory_utilization
    return kwargs


def _on_gpu(device: str) -> bool:
    if device != "auto":
        return device == "cuda"
    import torch

    return torch.cuda.is_available()


def apply_cpu_engine_env(engine: GeneratorEngineConfig) -> None:
    """The CPU backend reads its KV-cache size and thread binding from the environment.

    Set here, when an engine is about to be built (never at import), and inherited by the
    engine subprocess that vLLM spawns.
    """
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(engine.cpu_kvcache_gb)
    if engine.cpu_threads is not None:
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{engine.cpu_threads - 1}"


def build_vllm(model_dir: str | Path, engine: GeneratorEngineConfig, *, device: str = "auto"):
    """An offline `vllm.LLM` for batch work (evaluation, batch content, smoke tests)."""
    if not _on_gpu(device):
        apply_cpu_engine_env(engine)
    from vllm import LLM

    return LLM(**vllm_engine_kwargs(model_dir, engine, device=device))


def generate_vllm(llm, conversations: list[Messages], *, max_tokens: int = 128, temperature: float = 0.0) -> list[str]:
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=0)
    outputs = llm.chat(conversations, params, use_tqdm=False)
    return [o.outputs[0].text for o in outputs]


def generate_hf(model_dir: str | Path, conversations: list[Messages], *, max_tokens: int = 128) -> list[str]:
    """Greedy HF `generate` over one left-padded batch; the reference for vLLM's output."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), local_files_only=True, dtype=torch.float32)
    model.eval()
    prompts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    new_tokens = out[:, batch["input_ids"].shape[1] :]
    return [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
