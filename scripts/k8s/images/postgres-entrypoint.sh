#!/bin/sh
# Entrypoint of the local-cluster PostgreSQL image (scripts/k8s/build-images.sh). On an
# empty data directory it runs initdb (superuser POSTGRES_USER with POSTGRES_PASSWORD) and
# creates the database POSTGRES_DB; then it runs postgres on all addresses, with password
# (SCRAM) authentication for every TCP connection. Extra arguments go to postgres
# (e.g. -c shared_buffers=64MB). Development only.
#
# Environment:
#   POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)  required
#   POSTGRES_USER     superuser name (postgres)
#   POSTGRES_DB       database to create (POSTGRES_USER)
#   PGDATA            data directory (/var/lib/postgresql/data/pgdata). It is created with
#                     mode 0700, so point it below the mounted volume, not at it.
#   PGPORT            port (5432)
set -eu

bin=/usr/lib/postgresql/15/bin
PGDATA="${PGDATA:-/var/lib/postgresql/data/pgdata}"
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
socket_dir="${POSTGRES_SOCKET_DIR:-/tmp}"
export PGDATA

if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
  POSTGRES_PASSWORD="$(cat "$POSTGRES_PASSWORD_FILE")"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  [ -n "${POSTGRES_PASSWORD:-}" ] || {
    echo "postgres-entrypoint: POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) is required" >&2
    exit 1
  }
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  "$bin/initdb" -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync
  rm -f "$pwfile"
  # initdb's host lines cover loopback only; clients come from the pod network.
  printf '%s\n' 'host all all 0.0.0.0/0 scram-sha-256' 'host all all ::/0 scram-sha-256' \
    >>"$PGDATA/pg_hba.conf"
  if [ "$db" != postgres ]; then
    case "$db$user" in *'"'*) echo "postgres-entrypoint: '\"' in POSTGRES_DB or POSTGRES_USER" >&2; exit 1 ;; esac
    # A single-user backend runs the statement; it needs no server and no client.
    echo "CREATE DATABASE \"$db\" OWNER \"$user\"" | "$bin/postgres" --single -D "$PGDATA" \
      -c jit=off postgres >/dev/null
  fi
  echo "postgres-entrypoint: initialised $PGDATA (user $user, database $db)"
fi

exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' -c port="${PGPORT:-5432}" \
  -c unix_socket_directories="$socket_dir" -c jit=off -c logging_collector=off "$@"
