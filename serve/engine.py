"""The generator's engine seam: vLLM's async engine in production, a fake in unit tests.

An engine takes chat messages and yields text deltas. `VLLMEngine` applies the model's chat
template and runs vLLM's `AsyncLLM` (CPU build here, CUDA on GPU nodes); JSON output uses
vLLM's structured outputs so product-page sections always parse.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol


class Engine(Protocol):
    model_version: str

    def stream(
        self, messages: list[dict[str, str]], *, max_tokens: int, json_schema: dict | None = None
    ) -> AsyncIterator[str]:
        """Text deltas of one greedy completion. Closing the iterator early, or cancelling the task
        that iterates it, stops the generation (vLLM: the request is aborted)."""

    async def check_health(self) -> None:
        """Return if the engine can generate, raise if it cannot (the generator's health probe)."""


class VLLMEngine:
    restart_when_unhealthy = True  # a dead engine process does not come back: Serve restarts the replica

    def __init__(self, model_dir: str | Path, engine_cfg, model_version: str, repetition_penalty: float = 1.1):
        from transformers import AutoTokenizer
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from ml.llm import _on_gpu, apply_cpu_engine_env, vllm_engine_kwargs

        if not _on_gpu("auto"):
            apply_cpu_engine_env(engine_cfg)
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        from ml.prompts import STRUCTURED_ENGINE_KWARGS

        # The same structured-output backend as evaluation and batch generation (xgrammar, no
        # free whitespace), so a served page is held to the JSON validity measured offline.
        self.engine = AsyncLLM.from_engine_args(
            AsyncEngineArgs(**vllm_engine_kwargs(model_dir, engine_cfg), **STRUCTURED_ENGINE_KWARGS),
            stat_loggers=engine_stat_loggers(),
        )
        self.model_version = model_version
        # Small models loop ("..., and the X, and the X"); a mild penalty stops it.
        self.repetition_penalty = repetition_penalty
        self._ids = itertools.count()
        self.active = 0  # requests generating now
        self.aborted = 0  # requests stopped before they finished

    async def stream(self, messages, *, max_tokens, json_schema=None):
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        from ml.prompts import chat_template_kwargs

        # a prefilled assistant turn (a reason's opening) is continued, not answered
        prompt = self.tokenizer.apply_chat_template(messages, tokenize=False, **chat_template_kwargs(messages))
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0,
            repetition_penalty=self.repetition_penalty,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=StructuredOutputsParams(json=json_schema) if json_schema else None,
        )
        request_id = f"sg-{next(self._ids)}"
        finished = False
        self.active += 1
        try:
            async for out in self.engine.generate(prompt, params, request_id):
                if out.outputs and out.outputs[0].text:
                    yield out.outputs[0].text
                finished = finished or out.finished
            finished = True
        finally:
            self.active -= 1
            # Cancelled (the Serve request was cancelled: CancelledError), closed early (the consumer
            # stopped: GeneratorExit) or failed: free the engine's slot now. AsyncLLM.generate aborts
            # on cancellation too, but not when its consumer simply stops iterating; aborting an
            # unknown or finished request id is a no-op (AsyncLLM.abort maps external ids).
            if not finished:
                self.aborted += 1
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.engine.abort(request_id))

    async def check_health(self) -> None:
        """AsyncLLM.check_health raises EngineDeadError once its engine-core process is gone."""
        await self.engine.check_health()

    def shutdown(self) -> None:
        self.engine.shutdown()


def engine_stat_loggers() -> list | None:
    """vLLM's own Ray stat logger inside a Ray actor (a Generator replica): the engine's tokens,
    time to first token, queue (running / waiting requests) and KV-cache use go to Ray's metrics
    endpoint as `ray_vllm_*`, tagged with the Serve replica. It replaces vLLM's process-local
    Prometheus logger, whose registry no endpoint serves here. None elsewhere (vLLM's default)."""
    from serve.metrics import in_ray_actor

    if not in_ray_actor():
        return None
    from vllm.v1.metrics.ray_wrappers import RayPrometheusStatLogger

    return [RayPrometheusStatLogger]


class FakeEngine:
    """Deterministic stand-in for unit tests: `respond(messages) -> str`, optional delay/failure."""

    def __init__(
        self,
        respond: Callable[[list[dict[str, str]]], str],
        *,
        delay_s: float = 0.0,
        fail: bool = False,
        model_version: str = "fake-1",
    ):
        self.respond, self.delay_s, self.fail, self.model_version = respond, delay_s, fail, model_version
        self.calls = 0
        self.active = 0
        self.aborted = 0  # streams cancelled or closed before their last word

    async def stream(self, messages, *, max_tokens, json_schema=None):
        self.calls += 1
        if self.fail:
            raise RuntimeError("fake engine is down")
        from ml.prompts import continuation_of

        text = self.respond(messages)
        prefix = continuation_of(messages)  # a real engine continues a prefilled turn: yield the rest only
        if prefix and text.startswith(prefix):
            text = text[len(prefix) :].lstrip()
        words = text.split(" ")
        finished = False
        self.active += 1
        try:
            for i, w in enumerate(words):
                await asyncio.sleep(self.delay_s / max(len(words), 1))
                yield w if i == 0 else " " + w
            finished = True
        finally:
            self.active -= 1
            self.aborted += not finished

    async def check_health(self) -> None:
        if self.fail:
            raise RuntimeError("fake engine is down")


def build_engine(spec: dict[str, Any]) -> Engine:
    """Engine from a picklable spec (what `.bind()` carries across the Ray boundary)."""
    if spec["kind"] == "vllm":
        from core.config import load_config
        from ml.base_model import check_generator_dir

        cfg = load_config(spec.get("config_path"), spec.get("overrides"))
        return VLLMEngine(
            check_generator_dir(Path(spec["model_dir"])),
            cfg.models.engine,
            spec["model_version"],
            cfg.serve.generation.repetition_penalty,
        )
    if spec["kind"] == "fake":
        import importlib

        module, _, name = spec["respond"].partition(":")
        return FakeEngine(
            getattr(importlib.import_module(module), name),
            delay_s=spec.get("delay_s", 0.0),
            fail=spec.get("fail", False),
            model_version=spec.get("model_version", "fake-1"),
        )
    raise ValueError(f"unknown engine kind {spec['kind']!r}; use 'vllm' or 'fake'")
