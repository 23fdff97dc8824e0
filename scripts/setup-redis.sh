#!/usr/bin/env bash
# Makes sure redis-server from the Debian packages is installed and prints its path. Tests
# start private instances on free ports; nothing here starts or touches a system instance.
set -euo pipefail

if ! command -v redis-server >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup-redis: installing redis-server from the Debian packages" >&2
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends redis-server >&2
  $sudo service redis-server stop >/dev/null 2>&1 || true
fi
command -v redis-server
