#!/usr/bin/env bash
# Creates .venv from requirements.lock with a Python 3.10 interpreter (the only
# version TFX 1.16 installs on here) and installs this project into it.
# Re-running is cheap: nothing happens unless the lock file or setup.py changed,
# and then an existing 3.10 venv is updated in place.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
STAMP="$VENV/.installed"
WANT="$(cat requirements.lock setup.py | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi

find_python310() {
  local candidate
  for candidate in "${PYTHON:-}" python3.10 \
      "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10 \
      /usr/local/bin/python3.10 /usr/bin/python3.10; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys, venv; assert sys.version_info[:2] == (3, 10)' >/dev/null 2>&1; then
      command -v "$candidate" || echo "$candidate"
      return 0
    fi
  done
  return 1
}

if ! PY="$(find_python310)"; then
  echo "error: Python 3.10 not found. TFX 1.16 needs exactly Python 3.10." >&2
  echo "       Install it (e.g. 'pyenv install 3.10.13') or point PYTHON at a 3.10 interpreter:" >&2
  echo "       make PYTHON=/path/to/python3.10 test" >&2
  exit 1
fi

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  # Update in place: pip changes only the pins that moved, and processes
  # using the venv are not pulled from under.
  echo "Updating $VENV from requirements.lock"
else
  echo "Creating $VENV with $PY ($("$PY" --version 2>&1))"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade "pip==26.3" "setuptools==84.2.1" "wheel==0.48.0"
echo "Installing pinned dependencies from requirements.lock (about 5 minutes on a warm pip cache)"
"$VENV/bin/python" -m pip install --quiet --no-deps -r requirements.lock
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
"$VENV/bin/python" -m pip check
echo "$WANT" > "$STAMP"
