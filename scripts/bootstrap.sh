#!/usr/bin/env bash
# Installs the Debian 12 packages sipd needs, only those missing, then the npm packages
# of tests/node (grpc-js, proto-loader, buf) when their lock file changed (idempotent and
# quiet when everything is there). Run as root or with sudo available.
#
#   scripts/bootstrap.sh          what sipd needs to build and test
#   scripts/bootstrap.sh bench    the same plus Kamailio 5.6 (Debian 12's `kamailio`), only
#                                 for the comparison in bench/tm_bench.cc (it runs a
#                                 throw-away Kamailio on loopback; sipd never needs it)
#   scripts/bootstrap.sh fuzz     the same plus clang with libFuzzer (bench/fuzz.sh)
set -euo pipefail

# Why each package is here: see README.md "Dependencies".
PACKAGES=(
  build-essential cmake pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libosip2-dev libc-ares-dev libxmlrpc-c++8-dev libexpat1-dev libboost-dev libcli11-dev libsqlite3-dev
  libssl-dev
  sip-tester sipsak
  python3 python3-grpcio python3-protobuf
  clang-format procps iproute2 curl nghttp2-client ccache openssl
  golang-go golang-google-grpc-dev golang-google-protobuf-dev golang-google-genproto-dev
  golang-github-golang-protobuf-1-5-dev
  protoc-gen-go protoc-gen-go-grpc
  nlohmann-json3-dev chromium prometheus
)

if [ "${1:-}" = "bench" ]; then
  PACKAGES+=(kamailio)
fi
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
# Node and npm: Debian's packages unless a node and an npm are there already (another
# distribution's nodejs, which carries its own npm, would conflict with Debian's npm).
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "bootstrap: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Node stub client's packages and buf (tests/node/package-lock.json), from the npm
# registry; again only when the lock file changed since the last install.
node_dir=tests/node
cd "$(dirname "$0")/.."
stamp=$node_dir/node_modules/.sipd-lock
if ! cmp -s "$node_dir/package-lock.json" "$stamp" 2>/dev/null; then
  echo "bootstrap: npm ci in $node_dir" >&2
  npm ci --prefix "$node_dir" --no-audit --no-fund --loglevel=error >/dev/null
  cp "$node_dir/package-lock.json" "$stamp"
fi
