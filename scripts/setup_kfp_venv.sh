#!/usr/bin/env bash
# Creates .venv-kfp: the Kubeflow Pipelines packages on top of the main .venv.
#
# `kfp` 2.x declares protobuf>=4.21 while TFX 1.16 pins protobuf<4.21, so pip
# cannot resolve both into one environment (and `pip check` on .venv would
# fail). The generated pipeline-spec code runs fine on protobuf 3.20.3, so this
# venv holds only kfp, kfp-pipeline-spec and kfp-server-api (installed with
# --no-deps) and reaches every other package, this project included, through
# the main .venv's site-packages (a .pth hook). .venv itself is never changed.
# Re-running is cheap: nothing happens unless the main venv or the pins changed.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_VENV="${MAIN_VENV:-.venv}"
VENV="${KFP_VENV:-.venv-kfp}"
PINS=(kfp==2.13.0 kfp-pipeline-spec==0.6.0 kfp-server-api==2.4.0 requests-toolbelt==1.0.0)
source scripts/overlay_venv.sh
WANT="$( (cat requirements.lock; echo "${PINS[*]}"; cat "$0") | overlay_venv_digest)"

if overlay_venv_is_current "$VENV" "$WANT"; then
  exit 0
fi
overlay_venv_create "$MAIN_VENV" "$VENV" "kfp on top of $MAIN_VENV"
"$VENV/bin/python" -m pip install --quiet --no-deps "${PINS[@]}"
"$VENV/bin/python" -c 'import kfp, tfx; from kfp.pipeline_spec import pipeline_spec_pb2; import pipeline'
overlay_venv_done "$VENV" "$WANT"
