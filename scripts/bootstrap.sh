#!/usr/bin/env bash
# Installs the Debian 12 packages sipd needs, only those missing (idempotent and quiet
# when everything is there). Run as root or with sudo available.
#
#   scripts/bootstrap.sh          what sipd needs to build and test
#   scripts/bootstrap.sh bench    the same plus Kamailio 5.6 (Debian 12's `kamailio`), only
#                                 for the comparison in bench/tm_bench.cc (it runs a
#                                 throw-away Kamailio on loopback; sipd never needs it)
set -euo pipefail

# Why each package is here: see README.md "Dependencies".
PACKAGES=(
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libosip2-dev libxmlrpc-c++8-dev libexpat1-dev libboost-dev libcli11-dev libsqlite3-dev
  sip-tester sipsak
  python3 python3-grpcio python3-protobuf
  clang-format procps iproute2 curl nghttp2-client ccache
)

if [ "${1:-}" = "bench" ]; then
  PACKAGES+=(kamailio)
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
