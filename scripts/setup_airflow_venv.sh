#!/usr/bin/env bash
# Creates .venv-airflow: Apache Airflow 2 on top of the main .venv.
#
# Airflow brings ~100 packages TFX does not need; keeping them out of .venv
# keeps `pip check` and `make lock` about the pipeline alone. This venv sees
# every package of .venv (this project included) through a .pth hook and adds
# Airflow with requirements.lock as constraints, so nothing TFX uses changes
# version (pip installs only into this venv; .venv itself is never written).
# Re-running is cheap: nothing happens unless the lock files or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_VENV="${MAIN_VENV:-.venv}"
VENV="${AIRFLOW_VENV:-.venv-airflow}"
STAMP="$VENV/.installed"
WANT="$(cat requirements.lock requirements-airflow.txt "$0" | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
if ! "$MAIN_VENV/bin/python" -c 'import tfx' >/dev/null 2>&1; then
  echo "error: $MAIN_VENV has no tfx; create it first (make venv)" >&2
  exit 1
fi

MAIN_SITE="$("$MAIN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BASE_PY="$("$MAIN_VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
echo "Creating $VENV (Airflow on top of $MAIN_VENV; about 2 minutes on a warm pip cache)"
rm -rf "$VENV"
"$BASE_PY" -m venv "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir also runs .venv's own .pth files (the editable install of this project).
echo "import site; site.addsitedir('$MAIN_SITE')" > "$SITE/zz_main_venv.pth"
"$VENV/bin/python" -m pip install --quiet --upgrade "pip==26.3"
# Airflow 2's web server needs Flask 2.2 / Werkzeug 2, while .venv pins Flask 3 for
# `pipeline serve`: those two are left out of the constraints and installed here,
# where they shadow .venv's copies (only for Airflow; TFX does not use Flask).
grep -v -i -E '^(flask|werkzeug)==' requirements.lock > "$VENV/constraints.txt"
"$VENV/bin/python" -m pip install --quiet -c "$VENV/constraints.txt" -r requirements-airflow.txt
# pip check, less the one conflict made on purpose above (this project's `serve` extra
# wants Flask 3; in this venv it gets Airflow's Flask 2.2, which the pipeline never imports).
if ! CHECK="$("$VENV/bin/python" -m pip check 2>&1)"; then
  if echo "$CHECK" | grep -v -i -E '^sentiment-rnn-pipeline .*flask' | grep -q .; then
    echo "$CHECK" >&2
    exit 1
  fi
  echo "pip check: only the expected Flask conflict ($(echo "$CHECK" | head -1))"
fi
"$VENV/bin/python" -c 'import airflow, tfx.orchestration.airflow.airflow_dag_runner, pipeline'
echo "$WANT" > "$STAMP"
