"""Typed config of the training section (`train:` in the YAML). Unknown keys are rejected."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ScalingSection(BaseModel):
    """Mirrors `ray.train.ScalingConfig`; resolved once per run and logged with the run."""

    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(2, ge=1, description="Ray Train workers (DDP ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker; NCCL on GPU, gloo on CPU.")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs reserved per worker; fractional on a 2-CPU node so workers schedule.")


class GeneratorEngineConfig(BaseModel):
    """vLLM engine arguments that differ between a CPU laptop and a GPU node."""

    model_config = ConfigDict(extra="forbid")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Weights/activations dtype. float32 on CPUs without AVX-512 bf16 (bf16 is ~4x slower there); bfloat16 on GPUs.",
    )
    max_model_len: int = Field(2048, ge=128, description="Longest prompt + completion, in tokens.")
    max_num_seqs: int = Field(16, ge=1, description="Sequences vLLM batches together.")
    cpu_kvcache_gb: int = Field(1, ge=1, description="KV-cache space on the CPU backend, GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_threads: int | None = Field(None, ge=1, description="OpenMP threads of the CPU engine; None = all cores it is given.")
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1, description="Fraction of GPU memory vLLM may take (GPU only).")
    enforce_eager: bool = Field(True, description="Skip graph capture: faster start-up, slower decode. Keep True on CPU.")


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="Seed for model init, sampling and data order.")
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Ray Train worker shape shared by all recipes.")
