#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the tests, as the unprivileged
# `postgres` user, and prints the URL to export as TESSERA_TEST_POSTGRES.
#
#   eval "$(scripts/postgres-for-tests.sh)"     # sets TESSERA_TEST_POSTGRES and TESSERA_TEST_PGDATA
#   scripts/postgres-for-tests.sh stop "$TESSERA_TEST_PGDATA"   # stops it and removes its files
#
# Needs Debian's postgresql package (apt-get install postgresql).
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "${1:-}" = stop ]; then
    as_pg "$bin/pg_ctl" -D "$2/data" -m fast stop >/dev/null
    # Only a directory this script made: never remove anything else it is handed.
    case $2 in /tmp/tessera-pg.*) rm -rf "$2" ;; esac
    exit 0
fi
dir=$(mktemp -d /tmp/tessera-pg.XXXXXX)
[ "$(id -u)" = 0 ] && chown postgres "$dir"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$bin/initdb" -D "$dir/data" --auth=trust -U postgres --encoding=UTF8 >"$dir/initdb.log" 2>&1
as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -c listen_addresses=127.0.0.1 -k $dir -c max_connections=300 -c fsync=off" start >/dev/null
echo "export TESSERA_TEST_POSTGRES=postgres://postgres@127.0.0.1:$port/postgres"
echo "export TESSERA_TEST_PGDATA=$dir"
