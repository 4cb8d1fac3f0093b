#!/usr/bin/env python3
"""Writes the seed corpus of the core_mi fuzz target (tests/fuzz/corpus/core_mi/).

An input is the command's index (1 byte, registration order) and its arguments, one
per line, as fuzz_core_mi.cc reads them. Run from the repository root:
python3 tests/fuzz/make_core_mi_seeds.py
"""
import os

OUT = os.path.join(os.path.dirname(__file__), "corpus", "core_mi")
# The registry of fuzz_core_mi.cc in registration order: the statistics commands (the
# test core), then RegisterCoreCommands (sipd/modules/core/core_commands.cc) with the
# events commands at 1.11's place.
COMMANDS = ["get_statistics", "reset_statistics", "uptime", "version", "pwd", "arg", "which",
            "ps", "kill", "debug", "cache_store", "cache_fetch", "cache_remove",
            "event_subscribe", "events_list", "subscribers_list", "list_tcp_conns", "help"]

SEEDS = {
    "stats-all": ("get_statistics", "all"),
    "stats-group-and-name": ("get_statistics", "evi:", "shmem:used_size", "nosuch"),
    "stats-reset": ("reset_statistics", "dropped_events"),
    "stats-reset-bad": ("reset_statistics", "shmem:"),
    "version-extra-arg": ("version", "x"),
    "which": ("which",),
    "ps": ("ps",),
    "debug-show": ("debug",),
    "debug-set": ("debug", "4"),
    "debug-bad": ("debug", "-4x"),
    "cache-store": ("cache_store", "local", "key", "value", "60"),
    "cache-store-forever": ("cache_store", "local", "k2", "v"),
    "cache-store-bad-expires": ("cache_store", "local", "k3", "v", "-1"),
    "cache-store-other-system": ("cache_store", "redis", "k", "v"),
    "cache-fetch": ("cache_fetch", "local", "key"),
    "cache-fetch-too-many": ("cache_fetch", "local", "key", "more"),
    "cache-remove": ("cache_remove", "local", "key"),
    "subscribe-udp": ("event_subscribe", "E_CORE_THRESHOLD", "udp:127.0.0.1:8888", "3600"),
    "subscribe-udp6": ("event_subscribe", "E_CORE_SHM_THRESHOLD", "udp:[::1]:8888"),
    "subscribe-unix": ("event_subscribe", "E_CORE_PKG_THRESHOLD", "unix:/tmp/sipd-events.sock"),
    "subscribe-remove": ("event_subscribe", "E_CORE_THRESHOLD", "udp:127.0.0.1:8888", "0"),
    "subscribe-bad-address": ("event_subscribe", "E_CORE_THRESHOLD", "udp:127.0.0.1:99999"),
    "subscribe-no-event": ("event_subscribe", "E_NOSUCH", "udp:127.0.0.1:8888"),
    "subscribe-no-protocol": ("event_subscribe", "E_CORE_THRESHOLD", "xmlrpc:host:80/x"),
    "events-list": ("events_list",),
    "subscribers-list": ("subscribers_list", "E_CORE_THRESHOLD", "udp:127.0.0.1:8888"),
    "help": ("help", "cache_store"),
    "help-unknown": ("help", "nosuch"),
    "kill-with-arg": ("kill", "now"),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (command, *args) in SEEDS.items():
        data = bytes([COMMANDS.index(command)]) + "\n".join(args).encode()
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
