#!/usr/bin/env bash
# Starts a local Redis server, the Celery broker of the Airflow deployment (idempotent).
#
#   scripts/start_redis.sh [DIR] [PORT]     (defaults: .redis, 6380)
#
# Debian's redis-server (installed with apt-get where missing), daemonized, listening
# on 127.0.0.1:PORT only, no persistence (a broker's queue is rebuilt by the scheduler),
# pidfile DIR/redis.pid, log DIR/redis.log, working directory DIR. Running it again on a
# live server does nothing; stop it with scripts/stop_redis.sh DIR. Prints the broker URI.
set -euo pipefail
DIR="$(mkdir -p "${1:-.redis}" && cd "${1:-.redis}" && pwd)"
PORT="${2:-6380}"

if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
  echo "Redis is not installed; installing Debian's redis-server package" >&2
  if [ "$(id -u)" != 0 ]; then echo "run as root, or: sudo apt-get install -y redis-server" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

running() { [ -s "$DIR/redis.pid" ] && kill -0 "$(cat "$DIR/redis.pid")" 2>/dev/null; }
if running; then
  echo "Redis already running in $DIR (pid $(cat "$DIR/redis.pid"))" >&2
  PORT="$(cat "$DIR/port")"
else
  # The config on the command line (no file under /etc is read or changed).
  redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --protected-mode yes \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" \
    --save '' --appendonly no >/dev/null
  echo "$PORT" > "$DIR/port"
  for _ in $(seq 50); do
    redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG && break
    sleep 0.2
  done
  redis-cli -h 127.0.0.1 -p "$PORT" ping | grep -q PONG || { tail -20 "$DIR/redis.log" >&2; exit 1; }
fi
echo "redis://127.0.0.1:$PORT/0"
