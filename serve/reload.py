"""Serving replicas pick up refreshed artifacts and catalog writes without a restart.

    reloader = Reloader(interval_s=cfg.serve.reload_poll_ms / 1000, live=live, catalog=catalog)
    reloader.watch("text index", [index_dir, embeddings_dir], load=load_text, swap=core.use_text)
    reloader.start()                           # on the replica's event loop (idempotent)

One background task per replica, never on a request's path:

- every `online.poll_ms` it applies catalog writes from the online database to this replica's
  catalog (`serve.live.LiveState.sync`: one indexed query per poll per replica);
- every `serve.reload_poll_ms` it stats the manifest of each watched directory (a committed
  directory's manifest is written last and replaced whole, `core.manifest`). When a stamp
  changes, it brings the catalog up to date (so new rows find their products), loads the new
  directories in a worker thread and swaps the result in on the event loop, in one step: a
  request sees the old bundle or the new one, never half of each. A load that fails (an
  incomplete or corrupted directory) keeps the old one serving and logs why; that stamp is not
  tried again, the next commit is. A directory without a manifest (being replaced, or not
  there yet) is waited for, not loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.manifest import MANIFEST_NAME

log = logging.getLogger("shopgraph.serve")

Stamp = tuple[tuple[int, int, int] | None, ...]


def manifest_stamp(dirs: list[Path]) -> Stamp:
    """(inode, mtime, size) of each directory's manifest; None where there is none (not committed
    yet, or being replaced). A commit renames a new directory into place: the stamp changes."""
    out = []
    for d in dirs:
        try:
            st = os.stat(Path(d) / MANIFEST_NAME)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
    return tuple(out)


@dataclass
class Watched:
    """Something a replica built from committed directories, and how to rebuild and swap it."""

    name: str
    dirs: list[Path]
    load: Callable[[], Any]  # runs in a worker thread: reads files, builds a new immutable bundle
    swap: Callable[[Any], Any]  # runs on the event loop: one assignment (or one short, await-free step)
    stamp: Stamp = ()
    failed: Stamp | None = None  # the stamp whose load failed: not retried until the directories change
    reloads: int = 0
    failures: int = 0
    last_error: str | None = None
    last_reload_s: float | None = None  # how long the last successful load took

    def status(self) -> dict[str, Any]:
        return {
            "reloads": self.reloads,
            "failures": self.failures,
            "last_error": self.last_error,
            "last_reload_s": self.last_reload_s,
        }


@dataclass
class Reloader:
    interval_s: float  # how often manifests are stat-ed (serve.reload_poll_ms)
    live: Any = None  # serve.live.LiveState, or None when the online database is off
    catalog: Any = None  # the catalog that `live` updates
    on_change: Callable[[str], None] | None = None  # per product whose row was applied
    watched: list[Watched] = field(default_factory=list)
    polls: int = 0
    _task: asyncio.Task | None = None
    _next_check: float = 0.0

    def watch(
        self,
        name: str,
        dirs: list[Path],
        load: Callable[[], Any],
        swap: Callable[[Any], Any],
        stamp: Stamp | None = None,
    ) -> Watched:
        """Watch `dirs`, whose current contents the replica loaded at start. `stamp`: taken before
        that load (`manifest_stamp`), so a commit racing with it is reloaded; None: now."""
        w = Watched(name, [Path(d) for d in dirs], load, swap, stamp=manifest_stamp(dirs) if stamp is None else stamp)
        self.watched.append(w)
        return w

    def start(self) -> None:
        """Start the background task on the running loop (idempotent; request paths may call it)."""
        if not self.watched and self.live is None:
            return  # nothing to refresh
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def status(self) -> dict[str, Any]:
        return {w.name: w.status() for w in self.watched} | {"catalog_polls": self.live.polls if self.live else 0}

    async def _loop(self) -> None:
        tick = self.interval_s
        if self.live is not None:
            tick = min(tick, self.live.cfg.poll_ms / 1000)
        while True:
            try:
                await self.tick()
            except Exception as e:  # a database that fails now may answer at the next tick
                log.warning("background refresh of this replica failed (%s: %s); retrying", type(e).__name__, e)
            await asyncio.sleep(tick)

    async def sync(self, force: bool = False) -> None:
        if self.live is not None:
            await self.live.sync(self.catalog, self.on_change, force=force)

    async def tick(self) -> list[str]:
        """One round: catalog writes (when due), then the manifests (when due). Returns what was reloaded."""
        await self.sync()
        if time.monotonic() < self._next_check:
            return []
        self._next_check = time.monotonic() + self.interval_s
        return await self.check()

    async def check(self) -> list[str]:
        """Reload whatever changed since the last check; names of what was swapped in."""
        self.polls += 1
        # A manifest that is missing: not committed yet, or its directory is being replaced
        # (core.manifest.staged_dir removes the old one, then renames the new one in). Nothing to
        # load until it is there; the old version keeps serving meanwhile.
        changed = [
            (w, s) for w in self.watched if (s := manifest_stamp(w.dirs)) != w.stamp and s != w.failed and None not in s
        ]
        if not changed:
            return []
        # The refresh writes the database before it commits the directories: catch up first, so
        # rows for products added since the last poll find them in the catalog. A database that
        # fails does not hold the new directories back (their new products wait for the next poll).
        try:
            await self.sync(force=True)
        except Exception as e:
            log.warning("catalog poll before a reload failed (%s: %s); reloading anyway", type(e).__name__, e)
        done = []
        for w, stamp in changed:
            started = time.perf_counter()
            try:
                value = await asyncio.to_thread(w.load)
            except Exception as e:
                w.failed, w.failures, w.last_error = stamp, w.failures + 1, f"{type(e).__name__}: {e}"
                log.warning("%s: the new version did not load, the old one keeps serving: %s", w.name, w.last_error)
                continue
            w.swap(value)
            w.stamp, w.failed, w.reloads = stamp, None, w.reloads + 1
            w.last_reload_s = round(time.perf_counter() - started, 4)
            log.info("%s: reloaded from %s in %.3f s", w.name, ", ".join(map(str, w.dirs)), w.last_reload_s)
            done.append(w.name)
        return done


def replica_reloader(cfg, catalog, on_change: Callable[[str], None] | None = None) -> Reloader:
    """The background refresh of one replica: the online database when `online.enabled` (opened
    here, in the replica, as the ingress does), every `serve.reload_poll_ms` the manifests."""
    live = None
    if cfg.online.enabled:
        from serve.live import LiveState

        live = LiveState.open(cfg)
    return Reloader(cfg.serve.reload_poll_ms / 1000, live=live, catalog=catalog, on_change=on_change)
