#!/usr/bin/env bash
# Starts a local PostgreSQL server for development and tests (idempotent).
#
#   scripts/start_postgres.sh [DIR] [PORT]     (defaults: .postgres, 5433)
#
# PostgreSQL 15 from Debian's packages (installed with apt-get where missing), a
# cluster initialised under DIR/data, listening on 127.0.0.1:PORT and on a socket
# in DIR. Logins: on the socket the OS user is trusted; over TCP a password is
# required, generated once and kept in the passfile DIR/pgpass (mode 600): point
# PGPASSFILE at it, as any libpq client (the pipeline, Airflow, psql) reads it.
# Running it again on a live server does nothing; stop it with
# scripts/stop_postgres.sh DIR. Prints the server's URI (without password) on stdout.
set -euo pipefail
DIR="$(mkdir -p "${1:-.postgres}" && cd "${1:-.postgres}" && pwd)"
# The port of the first start is kept in DIR/port: a restart without PORT reuses it.
PORT="${2:-$(cat "${DIR}/port" 2>/dev/null || echo 5433)}"
USER_NAME="${PGUSER_NAME:-$(id -un)}"

bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do [ -x "$dir/pg_ctl" ] && echo "$dir"; done | sort -V | tail -1
}
BIN="$(bindir || true)"
if [ -z "$BIN" ]; then
  echo "PostgreSQL is not installed; installing Debian's postgresql package" >&2
  if [ "$(id -u)" != 0 ]; then echo "run as root, or: sudo apt-get install -y postgresql" >&2; exit 1; fi
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  BIN="$(bindir)"
fi

# PostgreSQL refuses to run as root: root runs it as the `postgres` system user.
RUN=()
OWNER="$USER_NAME"
if [ "$(id -u)" = 0 ]; then
  OWNER=postgres
  RUN=(runuser -u postgres --)
  chown postgres "$DIR"
fi

if [ ! -s "$DIR/data/PG_VERSION" ]; then
  "${RUN[@]}" "$BIN/initdb" -D "$DIR/data" -U "$OWNER" --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >"$DIR/initdb.log"
fi

if "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  echo "PostgreSQL already running in $DIR" >&2
else
  "${RUN[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
fi
# The server's port is in postmaster.pid when it was started with another PORT before.
PORT="$(sed -n 4p "$DIR/data/postmaster.pid")"
echo "$PORT" > "$DIR/port"
# root connects as the `root` role; create it once.
if [ "$OWNER" != "$USER_NAME" ]; then
  "${RUN[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U "$OWNER" -d postgres -tAc \
    "SELECT 1 FROM pg_roles WHERE rolname='$USER_NAME'" | grep -q 1 ||
    "${RUN[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U "$OWNER" -d postgres -qc "CREATE ROLE \"$USER_NAME\" SUPERUSER LOGIN"
fi
if [ ! -s "$DIR/password" ]; then
  (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$DIR/password")
  "${RUN[@]}" "$BIN/psql" -h "$DIR" -p "$PORT" -U "$OWNER" -d postgres -qc \
    "ALTER ROLE \"$USER_NAME\" PASSWORD '$(cat "$DIR/password")'"
fi
(umask 077 && printf '127.0.0.1:%s:*:%s:%s\nlocalhost:%s:*:%s:%s\n' "$PORT" "$USER_NAME" "$(cat "$DIR/password")" \
  "$PORT" "$USER_NAME" "$(cat "$DIR/password")" > "$DIR/pgpass")
[ "$(id -u)" = 0 ] && chown root "$DIR/password" "$DIR/pgpass"
echo "postgresql://$USER_NAME@127.0.0.1:$PORT/postgres"
