"""Write-then-commit directories with a checksum manifest.

Every directory that a later stage trusts (a prepared model, a shard set, an exported
checkpoint) is built in a sibling temporary directory, hashed file by file, and renamed into
place only after its manifest is written. A directory without a valid manifest is therefore
never complete, whatever files it holds: readers call `verify_dir` and get a clear error, and
producers rebuild it.

A committed manifest may also carry a `build` record (what the directory was built from:
config, input digests, version), added after the commit by `record_build`; it is not part of
the file list, so `verify_dir` is unaffected. `files_digest` is one content hash of a
directory's files, for comparing inputs without re-hashing them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST_NAME = "shopgraph-manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 8 * 1024 * 1024


class IncompleteDirError(RuntimeError):
    """A directory is missing, half-written or altered after it was committed."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _listed_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            yield path


def write_manifest(root: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under `root` and write the manifest (the commit record) last."""
    files = {
        str(p.relative_to(root)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in _listed_files(root)
    }
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "meta": meta,
        "files": files,
    }
    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False))
    os.replace(tmp, root / MANIFEST_NAME)
    return manifest


def read_manifest(root: Path) -> dict[str, Any]:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise IncompleteDirError(f"{root} has no {MANIFEST_NAME}: it was never completed")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise IncompleteDirError(f"{path} is not valid JSON ({e})") from e


def files_digest(manifest: dict[str, Any]) -> str:
    """One sha256 over a manifest's file names and content hashes: equal digests, equal contents."""
    files = {name: info["sha256"] for name, info in sorted(manifest.get("files", {}).items())}
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def record_build(root: str | Path, build: dict[str, Any]) -> dict[str, Any]:
    """Add (or replace) the `build` record of a committed directory's manifest, atomically."""
    root = Path(root)
    manifest = {**read_manifest(root), "build": build}
    tmp = root / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False))
    os.replace(tmp, root / MANIFEST_NAME)
    return manifest


def verify_dir(root: str | Path, *, full: bool = False) -> dict[str, Any]:
    """Return the manifest if `root` is complete, else raise `IncompleteDirError`.

    The quick check (sizes, no extra files missing) runs on every load; `full=True` also
    re-hashes every file, which `prepare` steps use before deciding to skip work.
    """
    root = Path(root)
    if not root.is_dir():
        raise IncompleteDirError(f"{root} does not exist")
    manifest = read_manifest(root)
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise IncompleteDirError(f"{root / MANIFEST_NAME} lists no files")
    for rel, info in files.items():
        path = root / rel
        if not path.is_file():
            raise IncompleteDirError(f"{root}: {rel} is listed in the manifest but missing")
        if path.stat().st_size != info["size"]:
            raise IncompleteDirError(f"{root}: {rel} has {path.stat().st_size} bytes, manifest says {info['size']}")
        if full and sha256_file(path) != info["sha256"]:
            raise IncompleteDirError(f"{root}: {rel} does not match its sha256 in the manifest")
    return manifest


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh staging directory beside `final`; on success it replaces `final`.

    The caller fills the directory and writes the manifest; if the block raises, the
    staging directory is removed and `final` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    staging.mkdir()
    try:
        yield staging
        read_manifest(staging)  # the producer must have committed it
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def ensure_dir(
    final: Path,
    build: Callable[[Path], dict[str, Any]],
    *,
    expect_meta: dict[str, Any],
    force: bool = False,
) -> tuple[dict[str, Any], bool]:
    """Build `final` with `build(staging) -> meta` unless a verified copy with `expect_meta` exists.

    Returns (manifest, built). A directory whose manifest is missing, whose files do not
    hash to their recorded values, or whose meta differs from `expect_meta` is rebuilt.
    """
    final = Path(final)
    if not force:
        try:
            manifest = verify_dir(final, full=True)
            meta = manifest.get("meta", {})
            if all(meta.get(k) == v for k, v in expect_meta.items()):
                return manifest, False
        except IncompleteDirError:
            pass
    with staged_dir(final) as staging:
        meta = {**build(staging), **expect_meta}
        write_manifest(staging, meta)
    return read_manifest(final), True
