#!/usr/bin/env python3
"""Interleaved A/B of `usrloc_bench register` between builds (or options).

    bench/ab_register.py PASSES ROUNDS NAME=BENCH[@OPTIONS] ...
    bench/ab_register.py --pool LOG ...

Each variant is a usrloc_bench binary (which starts the sipd of its own build tree) and,
after '@', extra usrloc_bench options separated by commas (e.g.
`nice=build/bench/usrloc_bench@--mi-nice,19`). Every pass runs each variant once with
`register --calls 10000 --rounds ROUNDS --db-mode 1` (a variant's own `--db-mode` replaces
the 1; the order reversed on odd passes),
and the per-round alone/loaded pairs are pooled per variant: on a noisy host the median
of many per-round drops, taken in the same minutes for every variant, says more than
one run's median. AB_REGISTER_LOG=FILE appends every run's output to FILE; `--pool`
prints the same figures over every run in such files (several A/Bs pooled). Results:
bench/RESULTS.md, "Group commit: the SQLite part cut" and the sections after it.
"""
import os
import re
import statistics
import subprocess
import sys


def new_pool():
    return {'drop': [], 'alone': [], 'load': [], 'cpu': [], 'dumps': [], 'stats_ms': []}


def add_run(pool, out):
    """Adds one `usrloc_bench register` output's rounds to `pool`."""
    by_round = {}
    for m in re.finditer(r'round (\d+) (alone|MI load)\s+(\d+) REGISTER/s\s+([\d.]+) us', out):
        by_round.setdefault(m.group(1), {})[m.group(2)] = (int(m.group(3)), float(m.group(4)))
    # The MI loop's own figures (ul_dump iterations per round, get_statistics latency).
    for m in re.finditer(r'\((\d+) x ul_dump \+ get_statistics; get_statistics ([\d.]+) ms', out):
        pool['dumps'].append(int(m.group(1)))
        pool['stats_ms'].append(float(m.group(2)))
    for r in by_round.values():
        if 'alone' in r and 'MI load' in r:
            alone, load = r['alone'][0], r['MI load'][0]
            pool['drop'].append(100.0 * (alone - load) / alone)
            pool['alone'].append(alone)
            pool['load'].append(load)
            pool['cpu'].append(r['alone'][1])


def report(pooled):
    for name, v in pooled.items():
        if not v['drop']:
            print(f'{name}: no rounds (did the bench fail?)')
            continue
        alone, load = statistics.median(v['alone']), statistics.median(v['load'])
        quartiles = statistics.quantiles(v['drop'], n=4) if len(v['drop']) > 1 else v['drop'] * 3
        print(f'{name}: median of per-round drops {statistics.median(v["drop"]):.1f} % '
              f'[{min(v["drop"]):.1f} .. {max(v["drop"]):.1f}; quartiles {quartiles[0]:.1f} / '
              f'{quartiles[2]:.1f}], n={len(v["drop"])}; '
              f'REG/s alone {alone:.0f}, under the loop {load:.0f} '
              f'(drop of medians {100.0 * (1 - load / alone):.1f} %); '
              f'worker CPU alone {statistics.median(v["cpu"]):.0f} us/REG')
        if v['dumps']:
            print(f'{name}: MI loop per round: {statistics.median(v["dumps"]):.0f} ul_dump '
                  f'(median), get_statistics {statistics.median(v["stats_ms"]):.2f} ms '
                  f'(median of the rounds\' medians)')


def pool_logs(paths):
    """Pools every run of AB_REGISTER_LOG files by variant name."""
    pooled = {}
    for path in paths:
        with open(path, encoding='utf-8') as log:
            for part in re.split(r'^=== pass \d+ ', log.read(), flags=re.M)[1:]:
                name, _, out = part.partition('\n')
                add_run(pooled.setdefault(name, new_pool()), out)
    report(pooled)
    return 0


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == '--pool':
        return pool_logs(sys.argv[2:])
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    passes, rounds = int(sys.argv[1]), int(sys.argv[2])
    variants = []
    for spec in sys.argv[3:]:
        name, _, rest = spec.partition('=')
        binary, _, options = rest.partition('@')
        variants.append((name, binary, [o for o in options.split(',') if o]))
    pooled = {name: new_pool() for name, _, _ in variants}
    for p in range(passes):
        for name, binary, options in (variants if p % 2 == 0 else variants[::-1]):
            db_mode = [] if '--db-mode' in options else ['--db-mode', '1']
            out = subprocess.run([binary, 'register', '--calls', '10000', '--rounds', str(rounds)]
                                 + db_mode + options,
                                 capture_output=True, text=True, check=False).stdout
            if os.environ.get('AB_REGISTER_LOG'):
                # Every run's own output, for pooling across invocations (--pool).
                with open(os.environ['AB_REGISTER_LOG'], 'a', encoding='utf-8') as log:
                    log.write(f'=== pass {p} {name}\n{out}')
            add_run(pooled[name], out)
            print(f'pass {p} {name}: {len(pooled[name]["drop"])} rounds so far', flush=True)
    report(pooled)
    return 0


if __name__ == '__main__':
    sys.exit(main())
