#!/usr/bin/env python3
"""Benchmark: `kubectl mtls proxy --snapshot` on a large real-Envoy dump vs parsing the file alone.

Builds a client sidecar with N Istio-shaped outbound clusters (real Envoy, through the test harness),
saves its config dump as a snapshot, then measures, in the same run:
  * baseline: a Python process that only does orjson.loads() of that file;
  * ours:     `kubectl-mtls proxy POD --snapshot DIR -o json` (whole process: start, parse,
              normalize, certificates, render);
  * in-process: orjson.loads alone vs loads + normalize (no interpreter start-up, no rendering);
and peak memory (max RSS) of each process. Targets: ours within 2x of the baseline, peak memory
under 4x the file size (counted above the interpreter's own baseline RSS).

    python benchmarks/bench_proxy.py [--clusters 3000] [--runs 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.envoy import Mesh, OutboundCluster, Sidecar  # noqa: E402
from harness.pki import make_root, make_workload, spiffe_id  # noqa: E402

BASELINE = "import sys, orjson; orjson.loads(open(sys.argv[1], 'rb').read())"
IDLE = "import orjson"


def build_dump(clusters: int, workdir: Path) -> Path:
    root = make_root()
    cert = make_workload(root, "default", "client", chain=[root])
    outbound = [
        OutboundCluster(
            f"svc-{i}.ns-{i % 50}.svc.cluster.local",
            8080 + i % 7,
            9,
            expected_sans=[spiffe_id(f"ns-{i % 50}", f"sa-{i}")],
            mode="AUTO" if i % 5 else "ISTIO_MUTUAL",
        )
        for i in range(clusters)
    ]
    with Mesh() as mesh:
        sidecar = mesh.add(
            Sidecar(
                pod="big",
                namespace="default",
                service_account="client",
                cert_chain_pem=cert.cert_pem,
                key_pem=cert.key_pem,
                root_pems=[root.cert_pem],
                inbound_mode="STRICT",
                outbound=outbound,
            )
        )
        dump = sidecar.config_dump()
    target = workdir / "proxies" / "default" / "big.json"
    target.parent.mkdir(parents=True)
    target.write_bytes(dump)
    return target


def timed(argv: list[str], runs: int) -> tuple[float, int]:
    """Best wall time of `runs` runs and the max RSS (KiB) of the child processes."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - start)
    return best, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss


def rss_of(argv: list[str]) -> int:
    """Max RSS (KiB) of one child, measured through a fresh wrapper so children do not mix."""
    code = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    return int(subprocess.run([sys.executable, "-c", code, *argv], check=True, capture_output=True).stdout)


def in_process(path: Path, runs: int) -> tuple[float, float]:
    import orjson

    from kubectl_mtls.normalize.dump import split
    from kubectl_mtls.normalize.proxy import build

    raw = path.read_bytes()
    parse = normalize = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        orjson.loads(raw)
        t1 = time.perf_counter()
        build("default", "big", None, split([("big", raw)]), dt.datetime.now(dt.UTC))
        t2 = time.perf_counter()
        parse, normalize = min(parse, t1 - t0), min(normalize, t2 - t1)
    return parse, normalize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--clusters", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        snapshot = Path(tmp)
        started = time.perf_counter()
        dump = build_dump(args.clusters, snapshot)
        size = dump.stat().st_size
        print(
            f"dump: {args.clusters} outbound clusters, {size / 1e6:.1f} MB "
            f"(real Envoy, built in {time.perf_counter() - started:.1f}s)"
        )
        cli = str(Path(sys.executable).parent / "kubectl-mtls")
        ours_argv = [cli, "proxy", "default/big", "--snapshot", str(snapshot), "-o", "json"]
        base_argv = [sys.executable, "-c", BASELINE, str(dump)]
        base_t, _ = timed(base_argv, args.runs)
        ours_t, _ = timed(ours_argv, args.runs)
        idle_rss = rss_of([sys.executable, "-c", IDLE])
        base_rss, ours_rss = rss_of(base_argv), rss_of(ours_argv)
        parse_t, norm_t = in_process(dump, args.runs)
        check = json.loads(subprocess.run(ours_argv, check=True, capture_output=True).stdout)
        assert len(check["clusters"]) == args.clusters, "the model lost clusters"
        mem_ratio = (ours_rss - idle_rss) * 1024 / size
        rows = [
            (
                f"whole process, best of {args.runs}",
                f"{base_t * 1000:.0f} ms",
                f"{ours_t * 1000:.0f} ms",
                f"{ours_t / base_t:.2f}x",
                "< 2x",
            ),
            (
                "in-process: orjson.loads vs our split+build",
                f"{parse_t * 1000:.0f} ms",
                f"{norm_t * 1000:.0f} ms",
                f"{norm_t / parse_t:.2f}x",
                "",
            ),
            (
                "peak RSS",
                f"{base_rss / 1024:.0f} MiB",
                f"{ours_rss / 1024:.0f} MiB",
                f"{mem_ratio:.2f}x file",
                "< 4x file (above idle)",
            ),
        ]
        print(f"{'measure':<40}{'orjson.loads only':>20}{'kubectl mtls proxy':>20}{'ratio':>14}  target")
        for name, base, ours, ratio, target in rows:
            print(f"{name:<40}{base:>20}{ours:>20}{ratio:>14}  {target}")
        print(
            f"(idle interpreter with orjson: {idle_rss / 1024:.0f} MiB; python {sys.version.split()[0]}, "
            f"{os.cpu_count()} cores)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
