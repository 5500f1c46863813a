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
STAMP="$VENV/.installed"
WANT="$( (cat requirements.lock; echo "${PINS[*]}"; cat "$0") | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; then
  exit 0
fi
if ! "$MAIN_VENV/bin/python" -c 'import tfx' >/dev/null 2>&1; then
  echo "error: $MAIN_VENV has no tfx; create it first (make venv)" >&2
  exit 1
fi

MAIN_SITE="$("$MAIN_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
BASE_PY="$("$MAIN_VENV/bin/python" -c 'import sys; print(sys._base_executable)')"
echo "Creating $VENV (kfp on top of $MAIN_VENV)"
rm -rf "$VENV"
"$BASE_PY" -m venv "$VENV"
SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# addsitedir (unlike a bare path line) also runs the main venv's own .pth files,
# which is how the editable install of this project is found.
echo "import site; site.addsitedir('$MAIN_SITE')" > "$SITE/zz_main_venv.pth"
"$VENV/bin/python" -m pip install --quiet --no-deps "${PINS[@]}"
"$VENV/bin/python" -c 'import kfp, tfx; from kfp.pipeline_spec import pipeline_spec_pb2; import pipeline'
echo "$WANT" > "$STAMP"
