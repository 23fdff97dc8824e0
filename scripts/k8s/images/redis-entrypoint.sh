#!/bin/sh
# Entrypoint of the local-cluster Redis image (scripts/k8s/build-images.sh): writes a
# redis.conf from the environment and runs redis-server with it (extra arguments are
# passed on). Development only.
#
# Environment:
#   REDIS_PORT            port (6379); with TLS the TLS port, and plain TCP is off
#   REDIS_PASSWORD        requirepass (or REDIS_PASSWORD_FILE); none by default
#   REDIS_TLS_DIR         directory with tls.crt and tls.key (and optionally ca.crt): TLS only
#   REDIS_DATA_DIR        working directory for RDB snapshots (/data)
set -eu

conf="${REDIS_CONFIG_FILE:-/tmp/redis.conf}"
port="${REDIS_PORT:-6379}"
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
  REDIS_PASSWORD="$(cat "$REDIS_PASSWORD_FILE")"
fi

# A redis.conf string: double quotes, with backslashes and quotes escaped.
quote() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }

umask 077
{
  echo "bind * -::*"
  echo "dir $(quote "${REDIS_DATA_DIR:-/data}")"
  if [ -n "${REDIS_PASSWORD:-}" ]; then
    echo "requirepass $(quote "$REDIS_PASSWORD")"
  else
    echo "protected-mode no"
  fi
  if [ -n "${REDIS_TLS_DIR:-}" ]; then
    echo "port 0"
    echo "tls-port $port"
    echo "tls-cert-file $(quote "$REDIS_TLS_DIR/tls.crt")"
    echo "tls-key-file $(quote "$REDIS_TLS_DIR/tls.key")"
    if [ -s "$REDIS_TLS_DIR/ca.crt" ]; then
      echo "tls-ca-cert-file $(quote "$REDIS_TLS_DIR/ca.crt")"
    fi
    echo "tls-auth-clients no"
  else
    echo "port $port"
  fi
} >"$conf"

exec redis-server "$conf" "$@"
