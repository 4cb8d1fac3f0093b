#!/usr/bin/env bash
# Installs the Debian 12 packages sipd needs, only those missing (idempotent and quiet
# when everything is there). Run as root or with sudo available.
set -euo pipefail

# Why each package is here: see README.md "Dependencies".
PACKAGES=(
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libosip2-dev libxmlrpc-c++8-dev libexpat1-dev libboost-dev libcli11-dev libsqlite3-dev libssl-dev
  sip-tester sipsak
  python3 python3-grpcio python3-protobuf
  clang-format procps iproute2 curl nghttp2-client ccache
)

# `bootstrap.sh fuzz` adds what bench/fuzz.sh needs: clang with libFuzzer and the
# sanitizer runtimes (not needed to build or test sipd).
if [ "${1:-}" = "fuzz" ]; then
  PACKAGES+=(clang-14 libclang-rt-14-dev)
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "bootstrap: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
