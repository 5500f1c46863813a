#!/usr/bin/env bash
# Stops a server started by scripts/start_redis.sh DIR (default .redis), by its pidfile.
set -euo pipefail
DIR="${1:-.redis}"
PIDFILE="$DIR/redis.pid"
[ -s "$PIDFILE" ] || { echo "no Redis pidfile in $DIR" >&2; exit 0; }
PID="$(cat "$PIDFILE")"
if kill -0 "$PID" 2>/dev/null; then
  kill -TERM "$PID"
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$PID" 2>/dev/null; then echo "Redis (pid $PID) did not stop" >&2; exit 1; fi
fi
rm -f "$PIDFILE"
