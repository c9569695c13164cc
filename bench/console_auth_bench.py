"""What a console login, a step-up and a token check cost, against a bare argon2id verify.

The anchor is `argon2.PasswordHasher.verify` at the same parameters (OWASP's
minimum by default): the check every password login pays anyway. Against it,
in one run and interleaved so machine noise hits every variant alike:

* `verify` known user, right password (the anchor plus a stat of the users file);
* `verify` known user, wrong password, and unknown user (the dummy-hash path):
  their ratio is the timing difference a name-guesser could see;
* `unlock` (login and every approval's step-up): verify plus the argon2id
  key-encryption key and the key's decryption, so about twice the anchor;
* `authenticate_token` with a key (HKDF + decrypt) and viewer-only (digests only):
  a bearer request's cost, with no slow KDF.

    python bench/console_auth_bench.py [--n 60] [--memory-kib 19456] [--time-cost 2]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import argon2
from argon2.low_level import Type

from knightwatch.console.users import LoginFailed, UserStore
from knightwatch.release.keys import SigningKey

PW = "correct horse battery"
NOW = time.time_ns()


def _expect_failure(call: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        try:
            call()
        except LoginFailed:
            return None
        raise AssertionError("a wrong password was accepted")

    return run


def quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="rounds (each times every variant once)")
    parser.add_argument("--memory-kib", type=int, default=19456)
    parser.add_argument("--time-cost", type=int, default=2)
    args = parser.parse_args()
    params = argon2.Parameters(
        type=Type.ID,
        version=19,
        salt_len=16,
        hash_len=32,
        time_cost=args.time_cost,
        memory_cost=args.memory_kib,
        parallelism=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = UserStore(Path(tmp) / "console-users.toml", profile=params)
        store.add("alice", PW, SigningKey.generate())
        token, _ = store.issue_token("alice", PW, ["operator"], 86400, now_ns=NOW)
        viewer, _ = store.issue_token("alice", None, ["viewer"], 86400, now_ns=NOW)
        hasher = argon2.PasswordHasher.from_parameters(params)
        anchor_hash = hasher.hash(PW)
        variants: dict[str, Callable[[], object]] = {
            "anchor: PasswordHasher.verify": lambda: hasher.verify(anchor_hash, PW),
            "verify (right password)": lambda: store.verify("alice", PW),
            "verify (wrong password)": _expect_failure(lambda: store.verify("alice", PW + "!")),
            "verify (unknown user)": _expect_failure(lambda: store.verify("mallory", PW)),
            "unlock (login, step-up)": lambda: store.unlock("alice", PW),
            "authenticate_token (key)": lambda: store.authenticate_token(token, NOW),
            "authenticate_token (viewer)": lambda: store.authenticate_token(viewer, NOW),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for call in variants.values():
            call()  # warm
        for _ in range(args.n):
            for name, call in variants.items():
                t0 = time.perf_counter_ns()
                call()
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
    print(
        f"python {platform.python_version()}, argon2id t={params.time_cost} "
        f"m={params.memory_cost} KiB p=1, {args.n} rounds"
    )
    anchor = statistics.median(samples["anchor: PasswordHasher.verify"])
    print(f"{'variant':32} {'median ms':>10} {'p99 ms':>9} {'p99.9 ms':>9} {'x anchor':>9}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:32} {median:10.3f} {quantile(values, 0.99):9.3f} "
            f"{quantile(values, 0.999):9.3f} {median / anchor:9.2f}"
        )


if __name__ == "__main__":
    main()
