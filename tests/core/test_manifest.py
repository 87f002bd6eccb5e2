"""Write-then-commit directories: a half-written or altered directory is never used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.manifest import MANIFEST_NAME, IncompleteDirError, ensure_dir, staged_dir, verify_dir, write_manifest


def _build(files: dict[str, bytes], calls: list[int] | None = None):
    def build(staging: Path) -> dict:
        if calls is not None:
            calls.append(1)
        for name, content in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            (staging / name).write_bytes(content)
        return {"files_written": len(files)}

    return build


def test_build_then_skip_when_verified(tmp_path: Path):
    calls: list[int] = []
    target = tmp_path / "m"
    manifest, built = ensure_dir(
        target, _build({"a.bin": b"x" * 10, "sub/b.txt": "héllo 你好".encode()}, calls), expect_meta={"v": 1}
    )
    assert built and manifest["meta"] == {"files_written": 2, "v": 1}
    assert set(manifest["files"]) == {"a.bin", "sub/b.txt"}
    _, built = ensure_dir(target, _build({}, calls), expect_meta={"v": 1})
    assert not built and len(calls) == 1


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: (d / MANIFEST_NAME).unlink(),  # crash before the commit record
        lambda d: (d / "a.bin").write_bytes(b"x" * 3),  # truncated file
        lambda d: (d / "a.bin").write_bytes(b"y" * 10),  # same size, different content
        lambda d: (d / "a.bin").unlink(),  # file lost
        lambda d: (d / MANIFEST_NAME).write_text("{not json"),  # torn manifest
    ],
)
def test_damaged_dir_is_detected_and_rebuilt(tmp_path: Path, damage):
    target = tmp_path / "m"
    ensure_dir(target, _build({"a.bin": b"x" * 10}), expect_meta={"v": 1})
    damage(target)
    with pytest.raises(IncompleteDirError):
        verify_dir(target, full=True)
    _, built = ensure_dir(target, _build({"a.bin": b"x" * 10}), expect_meta={"v": 1})
    assert built
    assert verify_dir(target, full=True)["meta"]["v"] == 1


def test_changed_source_meta_triggers_rebuild(tmp_path: Path):
    target = tmp_path / "m"
    ensure_dir(target, _build({"a": b"1"}), expect_meta={"source_sha256": "old"})
    _, built = ensure_dir(target, _build({"a": b"2"}), expect_meta={"source_sha256": "new"})
    assert built and (target / "a").read_bytes() == b"2"


def test_failed_build_leaves_previous_dir_untouched(tmp_path: Path):
    target = tmp_path / "m"
    ensure_dir(target, _build({"a": b"good"}), expect_meta={})

    def broken(staging: Path) -> dict:
        (staging / "a").write_bytes(b"half")
        raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError):
        ensure_dir(target, broken, expect_meta={}, force=True)
    assert (target / "a").read_bytes() == b"good"
    assert verify_dir(target, full=True)
    assert not list(tmp_path.glob(".m.staging-*")), "staging dir must be cleaned up"


def test_staged_dir_refuses_uncommitted_result(tmp_path: Path):
    with pytest.raises(IncompleteDirError):
        with staged_dir(tmp_path / "m") as staging:
            (staging / "a").write_bytes(b"no manifest written")
    assert not (tmp_path / "m").exists()


def test_stale_staging_dirs_from_a_crash_are_removed(tmp_path: Path):
    stale = tmp_path / ".m.staging-999999"
    stale.mkdir()
    ensure_dir(tmp_path / "m", _build({"a": b"1"}), expect_meta={})
    assert not stale.exists()


def test_manifest_without_files_is_incomplete(tmp_path: Path):
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({"files": {}}))
    with pytest.raises(IncompleteDirError, match="lists no files"):
        verify_dir(tmp_path)


def test_write_manifest_does_not_list_itself(tmp_path: Path):
    (tmp_path / "a").write_text("1")
    manifest = write_manifest(tmp_path, {})
    assert list(manifest["files"]) == ["a"]
