#!/usr/bin/env python3
"""Benchmark: does `kubectl mtls check -A --snapshot` grow linearly with the mesh?

For each mesh size N (default 500, 5,000 and 20,000 pods) a synthetic snapshot is generated
(benchmarks/synth.py: N sidecar pods with real Envoy dumps, N/2 workload PeerAuthentications, N/10
DestinationRules and AuthorizationPolicies), then measured in the same run, alternately, best of
`--runs`:
  * load:  a Python process that only reads and orjson-parses every JSON file of the snapshot;
  * check: `kubectl-mtls check -A --snapshot DIR -o json` (the whole process).
Each gets its wall time, CPU time (user + system, which other work on the machine disturbs less)
and peak memory (max RSS). Then the PeerAuthentication-heavy mesh of issue 10: 4 pods and 1,000 /
3,000 / 10,000 PeerAuthentications (before indexing: 1.75 s / 14.5 s / 150 s).

Targets: time(10N) / time(N) <= 12; check within 3x of load at the largest N; peak memory < 1 GiB.

    python benchmarks/bench_scale.py [--sizes 500,5000,20000] [--policies 1000,3000,10000] [--runs 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synth import write_snapshot

LOAD = (
    "import orjson, pathlib, sys\n"
    "for path in sorted(pathlib.Path(sys.argv[1]).rglob('*.json')):\n"
    "    orjson.loads(path.read_bytes())\n"
)
# Runs a command and reports its wall time, CPU time and max RSS (KiB) on stderr as JSON.
MEASURE = (
    "import json, resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "with open(sys.argv[1], 'wb') as out:\n"
    "    code = subprocess.run(sys.argv[2:], stdout=out).returncode\n"
    "wall = time.perf_counter() - start\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'code': code, 'wall': wall, 'cpu': usage.ru_utime + usage.ru_stime,"
    " 'rss': usage.ru_maxrss}), file=sys.stderr)\n"
)
GIB = 1024 * 1024  # KiB


@dataclass
class Sample:
    wall: float
    cpu: float
    rss: int  # KiB


def measure(argv: list[str], stdout: Path) -> Sample:
    proc = subprocess.run([sys.executable, "-c", MEASURE, str(stdout), *argv], capture_output=True, text=True)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    if report["code"] not in (0, 1):  # check exits 1 when it finds errors, which a synthetic mesh has
        raise SystemExit(f"{argv[0]} exited {report['code']}: {stdout.read_text()[:300]}")
    return Sample(report["wall"], report["cpu"], report["rss"])


def best(samples: list[Sample]) -> Sample:
    return Sample(min(s.wall for s in samples), min(s.cpu for s in samples), max(s.rss for s in samples))


def cli() -> str:
    return str(Path(sys.executable).parent / "kubectl-mtls")


def run_size(pods: int, policies: int | None, runs: int, workdir: Path) -> tuple[dict[str, Any], Sample, Sample]:
    snapshot = workdir / f"mesh-{pods}-{policies}"
    started = time.perf_counter()
    mesh = write_snapshot(snapshot, pods, policies)
    generated = time.perf_counter() - started
    size = sum(p.stat().st_size for p in snapshot.rglob("*") if p.is_file())
    out = workdir / "out.json"
    loads, checks = [], []
    for _ in range(runs):  # alternate, so both see the same background load
        loads.append(measure([sys.executable, "-c", LOAD, str(snapshot)], workdir / "load.out"))
        checks.append(measure([cli(), "check", "-A", "--snapshot", str(snapshot), "-o", "json"], out))
    data = json.loads(out.read_bytes())
    shutil.rmtree(snapshot)
    info = {
        "pods": len(mesh.objects["pods"]),
        "peerauthentications": len(mesh.objects["peerauthentications"]),
        "destinationrules": len(mesh.objects["destinationrules"]),
        "authorizationpolicies": len(mesh.objects["authorizationpolicies"]),
        "megabytes": size / 1e6,
        "findings": len(data["findings"]),
        "incomplete": len(data["incomplete"]),
        "generated": generated,
    }
    return info, best(loads), best(checks)


def table(rows: list[tuple[dict[str, Any], Sample, Sample]]) -> None:
    print(
        f"{'pods':>6} {'PAs':>6} {'DRs':>5} {'APs':>5} {'MB':>6} | {'load wall':>9} {'cpu':>6} {'RSS':>6} |"
        f" {'check wall':>10} {'cpu':>6} {'RSS':>6} | {'check/load cpu':>14} {'wall':>5} | findings"
    )
    for info, load, check in rows:
        print(
            f"{info['pods']:>6} {info['peerauthentications']:>6} {info['destinationrules']:>5} "
            f"{info['authorizationpolicies']:>5} {info['megabytes']:>6.0f} | {load.wall:>8.2f}s {load.cpu:>5.2f}s "
            f"{load.rss // 1024:>4}Mi | {check.wall:>9.2f}s {check.cpu:>5.2f}s {check.rss // 1024:>4}Mi |"
            f" {check.cpu / load.cpu:>13.2f}x {check.wall / load.wall:>4.1f}x | {info['findings']}"
        )


def growth(rows: list[tuple[dict[str, Any], Sample, Sample]], key: str) -> None:
    for (a, _, ca), (b, _, cb) in itertools.pairwise(rows):
        factor = b[key] / a[key]
        # Linear growth would give `factor`; the target allows 20% over it (12 for 10x).
        print(
            f"  {key} x{factor:g} ({a[key]} -> {b[key]}): check cpu x{cb.cpu / ca.cpu:.2f}, wall "
            f"x{cb.wall / ca.wall:.2f} (linear: x{factor:g}, target <= x{factor * 1.2:g})"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000,20000", help="pod counts (comma-separated)")
    parser.add_argument("--policies", default="1000,3000,10000", help="PeerAuthentication counts for 4 pods")
    parser.add_argument("--runs", type=int, default=2, help="runs of each measurement; the best is kept")
    parser.add_argument("--workdir", type=Path, help="where snapshots are generated (default: a temporary dir)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    policies = [int(p) for p in args.policies.split(",") if p]
    tmp = tempfile.mkdtemp(prefix="bench-scale-", dir=args.workdir)
    try:
        workdir = Path(tmp)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; best of {args.runs} runs each\n")
        print("mesh scan: check -A --snapshot on N pods vs loading the snapshot's JSON")
        rows = [run_size(n, None, args.runs, workdir) for n in sizes]
        table(rows)
        growth(rows, "pods")
        largest = rows[-1] if rows else None
        if largest is not None:
            info, load, check = largest
            print(
                f"  at {info['pods']} pods: check/load {check.cpu / load.cpu:.2f}x cpu, {check.wall / load.wall:.2f}x "
                f"wall (target <= 3x); peak RSS {check.rss / GIB:.2f} GiB (target < 1 GiB)"
            )
        if policies:
            print("\nPeerAuthentication-heavy: 4 pods and many PeerAuthentications")
            pa_rows = [run_size(4, p, args.runs, workdir) for p in policies]
            table(pa_rows)
            growth(pa_rows, "peerauthentications")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
