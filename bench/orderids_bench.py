"""The duplicate check's worst add, sharded (the Guard's `OrderIds`) against one set.

A node remembers every accepted client order id for its duplicate window. With
ids arriving and expiring at a steady rate, a single Python set rebuilds its
whole table whenever the slots its deletions left fill it up, and the add
that triggers the rebuild pays for it. `OrderIds` spreads the ids over
`SHARDS` sets (which the garbage collector is told not to walk), so a rebuild
touches one of them. Both sides hold the same
number of ids (`--held`), in the same order, with the same first-in,
first-out expiry; each add is timed with its share of the expiry (the
membership test, the insert and forgetting what left the window).

    python bench/orderids_bench.py [--held 600000] [--adds 3000000]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections import deque

from knightwatch.guard.orderids import SHARD_MASK, SHARDS, OrderIds


def one_set(held: int, adds: int) -> list[int]:
    seen: set[str] = set()
    fifo: deque[str] = deque()
    pc = time.perf_counter_ns
    out = []
    for i in range(adds):
        oid = f"o{i}"
        a = pc()
        if oid not in seen:
            seen.add(oid)
            fifo.append(oid)
            if len(fifo) > held:
                seen.discard(fifo.popleft())
        out.append(pc() - a)
    return out


def sharded(held: int, adds: int) -> list[int]:
    # one id per ns of simulated time and a window of `held` ns: `held` ids are remembered
    ids = OrderIds(held)
    shards = ids.shards
    pc = time.perf_counter_ns
    out = []
    for i in range(adds):
        oid = f"o{i}"
        a = pc()
        if oid not in shards[hash(oid) & SHARD_MASK]:
            ids.add(oid, i)
        out.append(pc() - a)
    return out


def report(name: str, lat: list[int]) -> dict[str, float]:
    s = sorted(lat)
    n = len(s)
    row = {
        "p50_us": s[n // 2] / 1000,
        "p999_us": s[int(n * 0.999)] / 1000,
        "p99999_us": s[int(n * 0.99999)] / 1000,
        "max_us": s[-1] / 1000,
        "over_1ms": sum(1 for x in s if x > 1_000_000),
    }
    print(
        f"{name:<22}{row['p50_us']:>9.2f}{row['p999_us']:>10.2f}{row['p99999_us']:>12.1f}"
        f"{row['max_us']:>11.0f}{row['over_1ms']:>10}"
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--held", type=int, default=600_000, help="ids remembered at once")
    ap.add_argument("--adds", type=int, default=3_000_000, help="ids added in all")
    args = ap.parse_args()
    print(f"{args.adds:,} adds with {args.held:,} ids remembered; {SHARDS} shards")
    print(f"{'':<22}{'p50 us':>9}{'p99.9 us':>10}{'p99.999 us':>12}{'max us':>11}{'> 1 ms':>10}")
    gc.disable()
    base = report("one set", one_set(args.held, args.adds))
    gc.collect()
    ours = report("OrderIds (sharded)", sharded(args.held, args.adds))
    gc.enable()
    print(
        f"max: {ours['max_us']:,.0f} us vs {base['max_us']:,.0f} us "
        f"({ours['max_us'] / base['max_us']:.2f}x); adds over 1 ms: "
        f"{ours['over_1ms']} vs {base['over_1ms']}"
    )


if __name__ == "__main__":
    main()
