#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and local multi-worker searches.
#
#   bash scripts/postgres.sh start DIR   install if missing, init DIR, start, print the URL (last line)
#   bash scripts/postgres.sh stop DIR    stop the server of DIR (the folder is left for the caller)
#
# Idempotent: `start` on a DIR whose server runs prints its URL again. The server listens
# on 127.0.0.1 only, on a free port, with trust auth and fsync off: for tests, not for data
# you want to keep. As root, initdb/pg_ctl run as the `postgres` user (initdb refuses root).
# Exit code 2: PostgreSQL is missing and cannot be installed (no apt-get, or not root).
set -euo pipefail
command=${1:-start}
dir=${2:?usage: postgres.sh start|stop DIR}
database=paratrain

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

as_db_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bin=$(server_bin)
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  [ "$command" = stop ] && exit 0
  if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "postgres.sh: PostgreSQL is not installed and cannot be installed here (needs apt-get as root)" >&2
    exit 2
  fi
  echo "postgres.sh: installing PostgreSQL from Debian packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(server_bin)
fi

case "$command" in
  stop)
    if [ -f "$dir/postmaster.pid" ]; then
      as_db_user "$bin/pg_ctl" -D "$dir" -m immediate -w stop >&2 || true
    fi
    exit 0
    ;;
  start) ;;
  *) echo "postgres.sh: unknown command '$command' (start or stop)" >&2; exit 2 ;;
esac

mkdir -p "$dir"
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
chmod 700 "$dir"

if [ ! -f "$dir/PG_VERSION" ]; then
  log=$(mktemp)
  if ! as_db_user "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --no-sync >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
fi

if ! as_db_user "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "$port" >"$dir/paratrain.port"
  as_db_user "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100" start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }
fi
port=$(cat "$dir/paratrain.port")

if ! as_db_user "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -tAc \
     "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  as_db_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$database"
fi
echo "postgresql://postgres@127.0.0.1:$port/$database"
