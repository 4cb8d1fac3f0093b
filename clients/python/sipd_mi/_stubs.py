"""Finds the gRPC stubs generated from proto/sipd/mi/v1/mi.proto.

The stubs (``sipd/mi/v1/mi_pb2.py`` and ``mi_pb2_grpc.py``) are generated, never
committed: by the build (CMake target ``sipd_mi_python`` writes them to
``<build>/clients/python/gen``) or by ``clients/python/generate_stubs.sh`` (writes them
next to this package, in ``clients/python``). They are looked up, in order:

1. on ``sys.path`` as they are;
2. in the directory named by the environment variable ``SIPD_MI_STUBS_DIR``;
3. in the directory that contains this package (``clients/python``).
"""

import importlib
import os
import sys

_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _try_import():
    try:
        mi_pb2 = importlib.import_module("sipd.mi.v1.mi_pb2")
        mi_pb2_grpc = importlib.import_module("sipd.mi.v1.mi_pb2_grpc")
        return mi_pb2, mi_pb2_grpc
    except ImportError:
        return None


def _load():
    found = _try_import()
    if found:
        return found
    candidates = [os.environ.get("SIPD_MI_STUBS_DIR"), _PACKAGE_PARENT]
    for directory in candidates:
        if not directory or not os.path.isfile(
            os.path.join(directory, "sipd", "mi", "v1", "mi_pb2.py")
        ):
            continue
        sys.path.insert(0, directory)
        # A failed import above may have cached an empty namespace package.
        for name in ("sipd.mi.v1", "sipd.mi", "sipd"):
            sys.modules.pop(name, None)
        found = _try_import()
        if found:
            return found
    raise ImportError(
        "sipd_mi: generated gRPC stubs not found. Build the CMake target sipd_mi_python "
        "and set SIPD_MI_STUBS_DIR=<build>/clients/python/gen, or run "
        "clients/python/generate_stubs.sh (needs protoc and grpc_python_plugin)."
    )


mi_pb2, mi_pb2_grpc = _load()
