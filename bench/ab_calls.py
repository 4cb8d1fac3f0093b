#!/usr/bin/env python3
"""Interleaved A/B of `tm_bench calls` between builds (or options).

    bench/ab_calls.py ROUNDS RATE NAME=BENCH[@OPTIONS] ...

Each variant is a tm_bench binary (which starts the sipd of its own build tree) and,
after '@', extra tm_bench options separated by commas (e.g. `pinned=build/bench/tm_bench@--cpus,0`).
Every round runs each variant once with `calls --rates RATE --seconds 10 --repeat 1
--servers sipd` (the order reversed on odd rounds) and prints the server's CPU per call
and the failed calls of each run, then the median per variant: on this noisy VM a call's
cost moves by +-15 % between runs, so only runs taken in the same minutes compare.
Results: bench/RESULTS.md, "Shared memory: the block cache in front of Boost's heap".
"""
import statistics
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    rounds, rate = int(sys.argv[1]), sys.argv[2]
    variants = []
    for spec in sys.argv[3:]:
        name, _, rest = spec.partition('=')
        binary, _, options = rest.partition('@')
        variants.append((name, binary, [o for o in options.split(',') if o]))
    cpu = {name: [] for name, _, _ in variants}
    failed = {name: [] for name, _, _ in variants}
    for r in range(rounds):
        for name, binary, options in (variants if r % 2 == 0 else variants[::-1]):
            out = subprocess.run([binary, 'calls', '--rates', rate, '--seconds', '10', '--repeat',
                                  '1', '--servers', 'sipd'] + options,
                                 capture_output=True, text=True, check=False).stdout
            # | sipd | offered | goodput | failed % | retrans/call | CPU us/call | CPU % |
            rows = [line for line in out.splitlines() if line.startswith('| sipd |')]
            if not rows:
                print(f'round {r} {name}: no result (did the bench fail?)', flush=True)
                continue
            cells = [c.strip() for c in rows[-1].strip('|').split('|')]
            cpu[name].append(float(cells[5]))
            failed[name].append(float(cells[3]))
            print(f'round {r} {name}: {cells[5]} us/call, failed {cells[3]} %', flush=True)
    for name, _, _ in variants:
        if cpu[name]:
            print(f'{name}: server CPU per call median {statistics.median(cpu[name]):.1f} us '
                  f'[{min(cpu[name]):.1f} .. {max(cpu[name]):.1f}], failed calls median '
                  f'{statistics.median(failed[name]):.2f} %, n={len(cpu[name])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
