#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, postgres, pg_isready, pgbench) from
# the Debian packages are installed. Tests start their own private cluster from them;
# nothing here starts or touches a system instance.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v pgbench >/dev/null; then
  exit 0
fi
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "setup-postgres: installing postgresql from the Debian packages" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
  postgresql postgresql-contrib >&2
# The package starts a system cluster; tests never use it.
$sudo service postgresql stop >/dev/null 2>&1 || true
