"""VLLMEngine.stream frees the engine's slot when no one reads on: a closed or cancelled stream
aborts its vLLM request (AsyncLLM.abort), a finished one does not. vLLM's AsyncLLM is replaced by
a stand-in with the same `generate` / `abort` calls, so no model is loaded.

    pytest -q tests/serve/test_engine.py
"""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from serve.engine import VLLMEngine


class FakeAsyncLLM:
    """`generate(prompt, params, request_id)` yields one delta every `delay_s`; `abort` is recorded."""

    def __init__(self, words: int = 5, delay_s: float = 0.01):
        self.words, self.delay_s = words, delay_s
        self.aborted: list[str] = []

    async def generate(self, prompt, params, request_id):
        for i in range(self.words):
            await asyncio.sleep(self.delay_s)
            yield SimpleNamespace(outputs=[SimpleNamespace(text=f"w{i} ")], finished=i == self.words - 1)

    async def abort(self, request_id, internal: bool = False):
        self.aborted.append(request_id)


def _engine(**kwargs) -> VLLMEngine:
    import itertools

    pytest.importorskip("vllm")
    engine = object.__new__(VLLMEngine)
    engine.tokenizer = SimpleNamespace(apply_chat_template=lambda messages, **_: "prompt")
    engine.engine = FakeAsyncLLM(**kwargs)
    engine.model_version, engine.repetition_penalty = "test", 1.0
    engine._ids, engine.active, engine.aborted = itertools.count(), 0, 0
    return engine


MESSAGES = [{"role": "user", "content": "hi"}]


def test_a_finished_stream_is_not_aborted():
    engine = _engine()

    async def main():
        return [d async for d in engine.stream(MESSAGES, max_tokens=8)]

    assert len(asyncio.run(main())) == 5
    assert engine.engine.aborted == [] and engine.active == 0 and engine.aborted == 0


def test_a_stream_closed_early_aborts_its_request():
    engine = _engine()

    async def main():
        stream = engine.stream(MESSAGES, max_tokens=8)
        async with contextlib.aclosing(stream):
            async for _ in stream:
                break  # the reader stops after one delta

    asyncio.run(main())
    assert engine.engine.aborted == ["sg-0"] and engine.active == 0 and engine.aborted == 1


def test_a_cancelled_reader_aborts_its_request():
    engine = _engine(words=100, delay_s=0.05)

    async def read():
        return [d async for d in engine.stream(MESSAGES, max_tokens=8)]

    async def main():
        task = asyncio.create_task(read())
        await asyncio.sleep(0.12)
        task.cancel()  # what Serve does to the replica's coroutine when the caller cancels
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert engine.engine.aborted == ["sg-0"] and engine.active == 0
