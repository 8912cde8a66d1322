#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests and local multi-worker searches.
#
#   bash scripts/postgres.sh start DIR [--listen ADDR] [--allow CIDR] [--netns NAME]
#       install if missing, init DIR, start, print the URL (last line)
#   bash scripts/postgres.sh stop DIR    stop the server of DIR (the folder is left for the caller)
#
# Idempotent: `start` on a DIR whose server runs prints its URL again. The server listens
# on 127.0.0.1 only (or on ADDR, one address, never all), on a free port, with trust auth
# and fsync off: for tests, not for data you want to keep. --allow CIDR (read when DIR is
# initialised) lets clients of that subnet in (pg_hba.conf; 127.0.0.1 only by default), e.g.
# tune-workers on other machines.
# --netns NAME runs the server in that network namespace (an emulated host).
# As root, initdb/pg_ctl run as the `postgres` user (initdb refuses root).
# Exit code 2: PostgreSQL is missing and cannot be installed (no apt-get, or not root).
set -euo pipefail
usage="usage: postgres.sh start|stop DIR [--listen ADDR] [--allow CIDR] [--netns NAME]"
command=${1:-start}
dir=${2:?$usage}
shift 2
database=paratrain
listen=127.0.0.1
allow=""
netns=""
while [ $# -gt 0 ]; do
  case "$1" in
    --listen) listen=${2:?--listen needs an address}; shift 2 ;;
    --allow) allow=${2:?--allow needs a subnet such as 10.0.0.0/24}; shift 2 ;;
    --netns) netns=${2:?--netns needs a namespace name}; shift 2 ;;
    *) echo "postgres.sh: unknown option '$1'; $usage" >&2; exit 64 ;;
  esac
done

server_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

in_netns() {
  if [ -n "$netns" ]; then ip netns exec "$netns" "$@"; else "$@"; fi
}

as_db_user() {
  if [ "$(id -u)" = 0 ]; then in_netns runuser -u postgres -- "$@"; else in_netns "$@"; fi
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
  if [ -n "$allow" ]; then
    echo "host all all $allow trust" >>"$dir/pg_hba.conf"
  fi
fi

if ! as_db_user "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
  port=$(in_netns python3 -c 'import socket, sys; s = socket.socket(); s.bind((sys.argv[1], 0)); print(s.getsockname()[1])' "$listen")
  echo "$port" >"$dir/paratrain.port"
  echo "$listen" >"$dir/paratrain.listen"
  as_db_user "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=$listen -c fsync=off -c max_connections=100" start >&2 \
    || { cat "$dir/server.log" >&2; exit 1; }
fi
port=$(cat "$dir/paratrain.port")
listen=$(cat "$dir/paratrain.listen" 2>/dev/null || echo 127.0.0.1)

if ! as_db_user "$bin/psql" -h "$listen" -p "$port" -U postgres -tAc \
     "SELECT 1 FROM pg_database WHERE datname = '$database'" | grep -q 1; then
  as_db_user "$bin/createdb" -h "$listen" -p "$port" -U postgres "$database"
fi
echo "postgresql://postgres@$listen:$port/$database"
