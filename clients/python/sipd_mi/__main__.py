"""Command line: run one MI command over gRPC and print the reply.

    python3 -m sipd_mi [-t HOST:PORT] ps
    python3 -m sipd_mi get_statistics core: sl:
    python3 -m sipd_mi --stream ul_dump
    python3 -m sipd_mi --json which
    python3 -m sipd_mi --list | --describe COMMAND
    printf 'version\nget_statistics all\nasync_echo 200 late\n' | python3 -m sipd_mi --session -
    python3 -m sipd_mi --subscribe E_UL_AOR_INSERT E_UL_CONTACT_INSERT [--filter aor=alice]
    python3 -m sipd_mi --watch [--interval 0.5] [--on-change] core: usrloc:

The target defaults to $SIPD_MI_TARGET, else 127.0.0.1:8090. The reply is printed as FIFO
prints it (status line, TAB-indented node lines). Exit status: 0 for a 2xx reply, 1 for
any other MI code, 2 for a transport problem (sipd not reachable, deadline, ...). When
the reader of the output goes away (`... | head`), the command stops quietly with 141,
as a program killed by SIGPIPE.

--session FILE ('-' = stdin) runs every command of FILE (one per line: the command and
its arguments, shell-quoted; empty lines and lines starting with # are skipped) pipelined
on one Session stream, and prints each reply as it comes (out of order), after a line
"## <line number> <command line>". Exit status: 0 if every reply is 2xx, 1 if any is not
(or a request was refused), 2 for a transport problem.

--subscribe EVENT... prints one line per event as it is raised (`TIME NAME seq=N
key=value...`; --json: one JSON object per line); --watch NAME... prints one line per
statistic per sample (`TIME group:name VALUE`, counters also `+DELTA RATE/s`). Both run
until interrupted, or for --count N events / samples; no deadline unless --timeout is
given. Exit status 2 when the stream fails (unknown event: NOT_FOUND, ...).
"""

import argparse
import concurrent.futures
import json
import os
import shlex
import sys

import grpc

from sipd_mi.client import Client, MiError
from sipd_mi.session import SessionRequestError


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python3 -m sipd_mi", description=__doc__.split("\n")[0])
    parser.add_argument(
        "-t",
        "--target",
        default=os.environ.get("SIPD_MI_TARGET", "127.0.0.1:8090"),
        help="mi_grpc address host:port (default: $SIPD_MI_TARGET or 127.0.0.1:8090)",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="deadline in seconds")
    parser.add_argument("--token", help="bearer token (default: $SIPD_MI_TOKEN, else run_dir's admin.token)")
    parser.add_argument("--token-file", help="file whose first line is the token")
    parser.add_argument("--tls-ca", help="CA certificate (PEM): use TLS and verify the server")
    parser.add_argument("--cert", help="client certificate (PEM) for mTLS")
    parser.add_argument("--key", help="client private key (PEM) for mTLS")
    parser.add_argument("--json", action="store_true", help="print the reply tree as JSON")
    parser.add_argument("--stream", action="store_true", help="use ExecuteStream")
    parser.add_argument("--list", action="store_true", help="list the loaded commands")
    parser.add_argument("--describe", metavar="COMMAND", help="describe one command")
    parser.add_argument(
        "--session",
        metavar="FILE",
        help="run the commands of FILE ('-' = stdin), one per line, pipelined on one Session",
    )
    parser.add_argument("--subscribe", action="store_true",
                        help="the arguments are event names: print events as they come")
    parser.add_argument("--watch", action="store_true",
                        help="the arguments are statistics (as get_statistics): print samples")
    parser.add_argument("--filter", action="append", default=[], metavar="KEY=VALUE",
                        help="--subscribe: only events whose parameter KEY is VALUE")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="--watch: seconds between samples (>= 0.1)")
    parser.add_argument("--on-change", action="store_true",
                        help="--watch: only statistics whose value changed")
    parser.add_argument("--count", type=int, default=0,
                        help="--subscribe/--watch: stop after N events/samples")
    parser.add_argument("command", nargs="?", help="MI command, e.g. ps")
    # REMAINDER: arguments may start with "-" (e.g. `debug -1`).
    parser.add_argument("params", nargs=argparse.REMAINDER, help="command arguments")
    args = parser.parse_args(argv)
    if args.subscribe and not args.command:
        parser.error("--subscribe needs at least one event name")
    if not (args.list or args.describe or args.session or args.command or args.watch):
        parser.error("a command (or --list / --describe / --session / --watch) is required")
    if not any(a.startswith("--timeout") for a in argv or []) and (args.subscribe or args.watch):
        args.timeout = None  # streams run until interrupted
    return args


def _run_subscribe(client, args, out) -> int:
    from sipd_mi import live

    events = [args.command, *args.params]
    filters = {}
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep or not key:
            sys.stderr.write(f"sipd_mi: --filter takes KEY=VALUE, not {item!r}\n")
            return 2
        filters[key] = value
    with client.subscribe(*events, filter=filters, timeout=args.timeout) as stream:
        if args.json:
            seen = 0
            for event in stream:
                out.write(json.dumps({"name": event.name, "time": event.time.isoformat(),
                                      "seq": event.seq, "params": event.params,
                                      "dropped_before": event.dropped_before}) + "\n")
                out.flush()
                seen += 1
                if args.count and seen >= args.count:
                    break
        else:
            for line in live.iter_lines_events(stream, args.count):
                out.write(line + "\n")
                out.flush()
    return 0


def _run_watch(client, args, out) -> int:
    names = [n for n in [args.command, *args.params] if n]
    seen = 0
    with client.watch_statistics(*names, interval=args.interval, on_change=args.on_change,
                                 timeout=args.timeout) as samples:
        for sample in samples:
            if args.json:
                out.write(json.dumps({"time": sample.time.isoformat(), "seq": sample.seq,
                                      "elapsed": sample.elapsed,
                                      "statistics": [s.__dict__ for s in sample.statistics]})
                          + "\n")
            else:
                stamp = sample.time.strftime("%Y-%m-%dT%H:%M:%S.") + \
                    f"{sample.time.microsecond // 1000:03d}Z"
                for s in sample.statistics:
                    line = f"{stamp} {s.group}:{s.name} {s.value}"
                    if s.kind == "counter":
                        line += f" {s.delta:+d} {s.rate_per_second:.1f}/s"
                    out.write(line + "\n")
            out.flush()
            seen += 1
            if args.count and seen >= args.count:
                break
    return 0


def _read_session_file(name):
    """(line number, words) of every command line of `name` ('-' = stdin)."""
    stream = sys.stdin if name == "-" else open(name, encoding="utf-8")
    try:
        commands = []
        for number, line in enumerate(stream, start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append((number, shlex.split(line)))
        return commands
    finally:
        if stream is not sys.stdin:
            stream.close()


def _run_session(client, args, out) -> int:
    commands = _read_session_file(args.session)
    worst = 0
    with client.session() as session:
        futures = {}
        for number, words in commands:
            futures[session.submit(words[0], *words[1:], stream=args.stream)] = (number, words)
        for future in concurrent.futures.as_completed(futures):
            number, words = futures[future]
            try:
                reply = future.result()
            except MiError as error:
                reply = error.reply
            except SessionRequestError as error:
                worst = max(worst, 1)
                if args.json:
                    out.write(json.dumps({"line": number, "command": words,
                                          "error": error.status.name,
                                          "message": error.message}) + "\n")
                else:
                    out.write(f"## {number} {shlex.join(words)}\n{error.status.name}: "
                              f"{error.message}\n")
                continue
            if not reply.ok:
                worst = max(worst, 1)
            if args.json:
                out.write(json.dumps({"line": number, "command": words,
                                      "reply": reply.to_dict()}) + "\n")
            else:
                out.write(f"## {number} {shlex.join(words)}\n{reply.to_text()}")
            out.flush()
    return worst


def main(argv=None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    out = sys.stdout
    try:
        with Client(
            args.target,
            timeout=args.timeout,
            token=args.token,
            token_file=args.token_file,
            tls_ca=args.tls_ca,
            cert=args.cert,
            key=args.key,
        ) as client:
            if args.list:
                commands = client.list_commands()
                if args.json:
                    json.dump(commands, out, indent=2)
                    out.write("\n")
                else:
                    for info in commands:
                        out.write(f"{info['name']}\t{info['module']}\n")
                return 0
            if args.describe:
                json.dump(client.describe(args.describe), out, indent=2)
                out.write("\n")
                return 0
            if args.session:
                return _run_session(client, args, out)
            if args.subscribe:
                return _run_subscribe(client, args, out)
            if args.watch:
                return _run_watch(client, args, out)
            if args.stream and not args.json:
                streamed = client.stream(args.command, *args.params)
                nodes = iter(streamed)
                first = next(nodes, None)  # the status comes with the first chunk
                out.write(f"{streamed.code} {streamed.reason}\n")
                if first is not None:
                    depth, node = first
                    out.write("\t" * depth + node.line() + "\n")
                for depth, node in nodes:
                    out.write("\t" * depth + node.line() + "\n")
                return 0 if 200 <= streamed.code < 300 else 1
            if args.stream:
                reply = client.stream(args.command, *args.params).collect()
            else:
                reply = client.execute(args.command, *args.params, check=False)
            if args.json:
                json.dump(reply.to_dict(), out, indent=2)
                out.write("\n")
            else:
                out.write(reply.to_text())
            return 0 if reply.ok else 1
    except MiError as error:
        if args.json:
            json.dump(error.reply.to_dict(), out, indent=2)
            out.write("\n")
        else:
            out.write(error.reply.to_text())
        return 1
    except grpc.RpcError as error:
        sys.stderr.write(f"sipd_mi: {args.target}: {error.code().name}: {error.details()}\n")
        return 2


# The exit status of a program killed by SIGPIPE, what a shell shows for `cmd | head`.
EXIT_BROKEN_PIPE = 141


def run(argv=None) -> int:
    """main(), stopping quietly when stdout's reader is gone (no traceback)."""
    try:
        status = main(argv)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        # Python would complain again when it flushes stdout at exit: point it at
        # /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(run())
