#!/bin/sh
# Generates the Python gRPC stubs of sipd's protos (sipd.mi.v1 for the sipd_mi package;
# the typed sipd.core.v1, sipd.statistics.v1, sipd.usrloc.v1, sipd.dialog.v1, sipd.events.v1;
# google.rpc error details).
#   clients/python/generate_stubs.sh [OUTPUT_DIR]    (default: clients/python)
# Needs protoc and grpc_python_plugin (Debian: protobuf-compiler, protobuf-compiler-grpc).
# The output (sipd/*/v1/*_pb2*.py, google/rpc/*_pb2*.py) is generated code: git ignores it.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto_root=$(cd "$here/../../proto" && pwd)
out=${1:-$here}
plugin=${GRPC_PYTHON_PLUGIN:-$(command -v grpc_python_plugin)}
mkdir -p "$out"
protoc -I "$proto_root" --python_out="$out" --grpc_out="$out" \
  --plugin=protoc-gen-grpc="$plugin" \
  "$proto_root/google/rpc/status.proto" "$proto_root/google/rpc/error_details.proto" \
  "$proto_root/sipd/mi/v1/mi.proto" "$proto_root/sipd/core/v1/core.proto" \
  "$proto_root/sipd/statistics/v1/statistics.proto" "$proto_root/sipd/usrloc/v1/usrloc.proto" \
  "$proto_root/sipd/dialog/v1/dialog.proto" \
  "$proto_root/sipd/events/v1/events.proto"
echo "stubs written to $out/sipd and $out/google"
