#!/bin/sh
# As the official image's: on an empty PGDATA, initdb with POSTGRES_USER and POSTGRES_PASSWORD
# and create POSTGRES_DB; then run postgres as the postgres user, listening on every address of
# the container. The first start's temporary server has no socket pg_isready would find, so
# the healthcheck turns healthy only once the real server runs.
set -eu
if [ "${1:-}" != postgres ]; then exec "$@"; fi
shift
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
as_pg() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  pwfile=$(mktemp)
  printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
  chown postgres "$pwfile"
  as_pg initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  init_socket=$(mktemp -d)
  chown postgres "$init_socket"
  as_pg pg_ctl -D "$PGDATA" -w -s \
    -o "-c listen_addresses='' -c unix_socket_directories=$init_socket" start
  if [ "$db" != postgres ]; then
    as_pg psql -h "$init_socket" -U "$user" -d postgres -v ON_ERROR_STOP=1 -q \
      -c "CREATE DATABASE \"$db\""
  fi
  as_pg pg_ctl -D "$PGDATA" -w -s -m fast stop
  rmdir "$init_socket"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  postgres -D "$PGDATA" -c listen_addresses='*' "$@"
