#!/usr/bin/env bash
# Creates .venv-airflow: Apache Airflow 2 on top of the main .venv.
#
# Airflow brings ~100 packages TFX does not need; keeping them out of .venv
# keeps `pip check` and `make lock` about the pipeline alone. This venv sees
# every package of .venv through a .pth hook (scripts/overlay_venv.sh) and adds
# Airflow with requirements.lock as constraints, so nothing TFX uses changes
# version. Nothing happens unless the lock files or these scripts changed.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_VENV="${MAIN_VENV:-.venv}"
VENV="${AIRFLOW_VENV:-.venv-airflow}"
source scripts/overlay_venv.sh
WANT="$(cat requirements.lock requirements-airflow.txt "$0" | overlay_venv_digest)"

if overlay_venv_is_current "$VENV" "$WANT"; then
  exit 0
fi
overlay_venv_create "$MAIN_VENV" "$VENV" "Airflow on top of $MAIN_VENV; about 2 minutes on a warm pip cache"
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
overlay_venv_done "$VENV" "$WANT"
