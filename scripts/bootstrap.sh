#!/usr/bin/env bash
# Installs everything footprint needs on this machine, from the project's own lock files:
#   uv (from PyPI, if missing), the Python 3.12 virtual environment (.venv, from uv.lock),
#   and the local LRS (lrs/node_modules, from lrs/package-lock.json).
# Safe to run again: each step is skipped when it is already done. Source it to get FP_PY etc.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }

# 1. uv
if ! command -v uv >/dev/null 2>&1; then
  log "installing uv from PyPI"
  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
  export PATH="$HOME/.local/bin:$PATH"
fi

# 2. a Python 3.12 interpreter uv accepts without downloading one
find_py312() {
  local c
  for c in "${UV_PYTHON:-}" python3.12 "$(command -v pyenv >/dev/null 2>&1 && ls -d "$(pyenv root)"/versions/3.12.*/bin/python3 2>/dev/null | sort -V | tail -1)" /usr/bin/python3.12 /usr/local/bin/python3.12; do
    [ -n "$c" ] || continue
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' >/dev/null 2>&1; then
      command -v "$c" 2>/dev/null || echo "$c"; return 0
    fi
  done
  return 1
}
if py=$(find_py312); then
  export UV_PYTHON="$py"
  export UV_PYTHON_DOWNLOADS="${UV_PYTHON_DOWNLOADS:-never}"
else
  log "no Python 3.12 found on PATH or under pyenv; letting uv fetch one"
fi

# 3. the virtual environment, exactly as locked
log "uv sync (Python ${UV_PYTHON:-managed})"
# Where PYTHONDONTWRITEBYTECODE is set (some CI images set it), Python never caches compiled
# modules, so every process would compile Airflow's and Great Expectations' thousands of modules
# again (seconds per process). Compile them once per lock instead: Python still reads .pyc files.
marker=.venv/.footprint-bytecode
if [ ! -f "$marker" ] || [ uv.lock -nt "$marker" ]; then
  uv sync --frozen --quiet --compile-bytecode
  touch "$marker"
else
  uv sync --frozen --quiet
fi
.venv/bin/python -m compileall -q pipelines dags bench >/dev/null

# 4. the local LRS (Learning Locker xapi-statements), exactly as locked
if [ ! -d lrs/node_modules/xapi-statements ] || [ lrs/package-lock.json -nt lrs/node_modules/.package-lock.json ]; then
  log "npm ci in lrs/ (Learning Locker xapi-statements)"
  (cd lrs && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
export PATH="$here/.venv/bin:$PATH"
