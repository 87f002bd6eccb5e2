"""core.runtime's background executor: periodic heavy work next to a serving process runs at the
lowest priority in its own thread, and leaves the caller's priority alone.

    pytest -q tests/core/test_runtime.py
"""

from __future__ import annotations

import os
import sys
import threading

import pytest

from core.runtime import background_executor


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_the_work_runs_niced_in_one_thread_and_the_caller_keeps_its_priority():
    mine = _priority()
    pool = background_executor("report", nice=19)
    try:
        seen = {pool.submit(lambda: (threading.get_native_id(), _priority())).result() for _ in range(3)}
    finally:
        pool.shutdown()
    assert len(seen) == 1  # one thread, reused
    ((tid, nice),) = seen
    assert nice == 19 and tid != threading.get_native_id()
    assert _priority() == mine


def test_a_frozen_start_up_heap_is_left_out_of_full_collections_and_still_freed_by_refcount():
    import gc
    import weakref

    from core.runtime import freeze_startup_heap

    class Loaded:  # what a replica loads at start (a catalog's worth of objects)
        pass

    loaded = [Loaded() for _ in range(20_000)]
    probe = weakref.ref(loaded[0])
    try:
        frozen = freeze_startup_heap()
        assert frozen >= 20_000 and gc.get_freeze_count() == frozen
        tracked = len(gc.get_objects())  # what a full collection walks now: not the frozen ones
        assert tracked < frozen
        del loaded
        assert probe() is None  # freed by reference counting, frozen or not
    finally:
        gc.unfreeze()
