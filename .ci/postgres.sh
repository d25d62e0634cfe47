#!/usr/bin/env bash
# A throw-away PostgreSQL server for the test suite: Debian's packages, started
# as an unprivileged user, listening only on a unix socket in a temp dir.
#
#   .ci/postgres.sh start   install if missing, initdb, start; prints the DATABASE_URL
#   .ci/postgres.sh url     prints the DATABASE_URL
#   .ci/postgres.sh stop    stop the server and remove its files
#
# The `torchlight` role may log in and create databases (pytest-django makes
# test_torchlight), nothing more. TORCHLIGHT_PG_DIR moves the files.
set -euo pipefail

PG_DIR="${TORCHLIGHT_PG_DIR:-/tmp/torchlight-pg-$(id -u)}"
DATA="$PG_DIR/data"
SOCK="$PG_DIR/sock"
LOG="$PG_DIR/server.log"
ROLE=torchlight

url() {
  # The socket directory, percent-encoded as the host: libpq connects over the unix socket.
  local host
  host=$(printf '%s' "$SOCK" | sed 's|/|%2F|g')
  echo "postgres://$ROLE@$host/$ROLE"
}

find_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$dir" ] || [ ! -x "$dir/initdb" ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "postgres.sh: PostgreSQL is not installed and installing it needs root (apt-get install postgresql)" >&2
      exit 1
    fi
    echo "postgres.sh: installing Debian's postgresql package" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    dir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$dir"
}

# Run a command as the unprivileged server user (PostgreSQL refuses to run as root).
as_server_user() {
  if [ "$(id -u)" = 0 ]; then
    local user=postgres
    id "$user" >/dev/null 2>&1 || user=nobody
    runuser -u "$user" -- "$@"
  else
    "$@"
  fi
}

server_user() {
  if [ "$(id -u)" = 0 ]; then
    if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
  else
    id -un
  fi
}

start() {
  local bin
  bin=$(find_bin)
  if [ -S "$SOCK/.s.PGSQL.5432" ] && as_server_user "$bin/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    url
    return
  fi
  rm -rf "$PG_DIR"
  mkdir -p "$DATA" "$SOCK"
  chmod 755 "$PG_DIR"
  chown -R "$(server_user)" "$PG_DIR"
  as_server_user "$bin/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; exit 1; }
  # No TCP at all; durability off: this server holds only test data.
  as_server_user "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses='' -k $SOCK -c unix_socket_permissions=0777 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
    start >/dev/null || { cat "$LOG" >&2; exit 1; }
  as_server_user "$bin/psql" -q -h "$SOCK" -U postgres -d postgres -v ON_ERROR_STOP=1 \
    -c "CREATE ROLE $ROLE LOGIN CREATEDB" -c "CREATE DATABASE $ROLE OWNER $ROLE" >/dev/null
  url
}

stop() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$bin" ] && [ -d "$DATA" ]; then
    as_server_user "$bin/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$PG_DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
