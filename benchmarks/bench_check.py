#!/usr/bin/env python3
"""Benchmark: `kubectl mtls check -A` on a 500-pod mesh, istioctl answering in 100 ms per call.

The pods are served by the Kubernetes API double; every sidecar's `istioctl proxy-config all` answer
is a real Envoy dump from examples/rotation, returned after an artificial 100 ms (a small shell
istioctl stand-in, so the measurement is ours and not the Python double's start-up). Printed side by
side, from the same run: our wall time, the sequential lower bound (pods x 100 ms) and the concurrent
lower bound (pods / concurrency x 100 ms); our peak memory; and the Kubernetes API request count at
two mesh sizes (it must not grow with the number of pods).

    python benchmarks/bench_check.py [--pods 500] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.kubeapi import FakeKubeAPI  # noqa: E402
from harness.scenarios import pod_object  # noqa: E402

DELAY = 0.1
EXAMPLE = REPO / "examples" / "rotation"
DUMP = EXAMPLE / "proxies" / "shop" / "payments-5d8c7b9f6-h3m9t.json"


def fake_istioctl(bin_dir: Path) -> None:
    """`proxy-config all POD.NS -o json` -> the dump after DELAY; `proxy-status` -> an empty 1.27+ table."""
    bin_dir.mkdir()
    script = bin_dir / "istioctl"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = proxy-status ]; then\n'
        '  echo "NAME     CLUSTER     ISTIOD     VERSION     SUBSCRIBED TYPES"; exit 0\n'
        "fi\n"
        f"sleep {DELAY}\n"
        f'exec cat "{DUMP}"\n'
    )
    script.chmod(0o755)


def mesh_objects(pods: int) -> list[dict]:
    objects = json.loads((EXAMPLE / "kubernetes" / "namespaces.json").read_text())["items"]
    objects += json.loads((EXAMPLE / "kubernetes" / "peerauthentications.json").read_text())["items"]
    objects += json.loads((EXAMPLE / "kubernetes" / "configmaps.json").read_text())["items"]
    for i in range(pods):
        app = f"svc{i % 25}"
        pod = pod_object("shop", f"{app}-5d8c7b9f6-{i:05d}", app, "payments", owner=("ReplicaSet", f"{app}-5d8c7b9f6"))
        objects.append(pod)
    for i in range(25):
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc{i}", "namespace": "shop"},
                "spec": {"selector": {"app": f"svc{i}"}, "ports": [{"port": 8080, "targetPort": 8080}]},
            }
        )
    return objects


def run_check(pods: int, concurrency: int, workdir: Path) -> tuple[float, int, int, dict]:
    with FakeKubeAPI(mesh_objects(pods)) as api:
        config = api.write_kubeconfig(workdir / f"kubeconfig-{pods}")
        env = {**os.environ, "KUBECONFIG": config, "PATH": f"{workdir / 'bin'}{os.pathsep}{os.environ['PATH']}"}
        cli = str(Path(sys.executable).parent / "kubectl-mtls")
        wrapper = (
            "import resource, subprocess, sys, time; t = time.perf_counter();"
            "p = subprocess.run(sys.argv[1:], capture_output=True);"
            "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss);"
            "sys.stderr.buffer.write(p.stdout)"
        )
        proc = subprocess.run(
            [sys.executable, "-c", wrapper, cli, "check", "-A", "-o", "json", "--concurrency", str(concurrency)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        wall, rss = proc.stdout.split()
        return float(wall), int(rss), len(api.requests), json.loads(proc.stderr)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        fake_istioctl(workdir / "bin")
        small_wall, _, small_requests, _ = run_check(50, args.concurrency, workdir)
        wall, rss, requests, data = run_check(args.pods, args.concurrency, workdir)
    sidecars = len([c for c in data["incomplete"] if c["what"].startswith("pod ")])
    assert sidecars == 0, data["incomplete"][:3]
    sequential = args.pods * DELAY
    concurrent = args.pods / args.concurrency * DELAY
    print(
        f"check -A: {args.pods} sidecar pods, istioctl {DELAY * 1000:.0f} ms per call, concurrency {args.concurrency}"
        f" ({len(data['findings'])} findings)"
    )
    print(f"{'measure':<44}{'value':>12}")
    rows = [
        ("wall time, kubectl mtls check -A", f"{wall:.2f} s"),
        ("sequential lower bound (pods x 100 ms)", f"{sequential:.2f} s"),
        (f"concurrent lower bound (pods / {args.concurrency} x 100 ms)", f"{concurrent:.2f} s"),
        ("ratio to the concurrent bound (target < 1.3x)", f"{wall / concurrent:.2f}x"),
        ("peak RSS", f"{rss / 1024:.0f} MiB"),
        ("API requests with 50 pods", f"{small_requests}"),
        (f"API requests with {args.pods} pods", f"{requests}"),
    ]
    for name, value in rows:
        print(f"{name:<44}{value:>12}")
    print(
        f"(50-pod run: {small_wall:.2f} s; python {sys.version.split()[0]}, {os.cpu_count()} cores, "
        f"max RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
