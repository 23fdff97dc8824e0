#!/usr/bin/env bash
# Provides a throwaway SMTP server for the notification tests: aiosmtpd from PyPI in a
# virtualenv cached outside the repo, keyed by version. Prints the venv's python; run it
# as `python -m aiosmtpd -n -l 127.0.0.1:PORT -c aiosmtpd.handlers.Mailbox DIR`.
set -euo pipefail

VERSION=1.4.6
venv="${TASKMESH_CACHE:-$HOME/.cache/taskmesh}/aiosmtpd-$VERSION"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  echo "setup-smtp: installing aiosmtpd $VERSION from PyPI into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "aiosmtpd==$VERSION" >&2
fi
echo "$venv/bin/python"
