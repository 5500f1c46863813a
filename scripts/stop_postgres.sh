#!/usr/bin/env bash
# Stops a server started by scripts/start_postgres.sh DIR (default .postgres); its data stays.
set -euo pipefail
DIR="${1:-.postgres}"
[ -s "$DIR/data/PG_VERSION" ] || { echo "no PostgreSQL cluster in $DIR" >&2; exit 0; }
BIN="$(for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && echo "$d"; done | sort -V | tail -1)"
RUN=()
[ "$(id -u)" = 0 ] && RUN=(runuser -u postgres --)
if "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast -w stop >/dev/null
fi
