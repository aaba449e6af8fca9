#!/usr/bin/env python3
"""Synthetic snapshots of a large mesh, for the scale benchmark (benchmarks/bench_scale.py).

A mesh of N pods: workloads of 4 pods (3% of them without a sidecar), about 100 pods per namespace,
one Service and one service account per workload; N/2 workload-level PeerAuthentications (by app,
by app and version, some with port-level exceptions, some selecting nothing), a mesh-wide STRICT
policy and a namespace policy in a fifth of the namespaces; N/10 DestinationRules (FQDN and short
hosts, subsets, exportTo, some DISABLE) and N/10 AuthorizationPolicies (principals of other
workloads, some DENY). Every sidecar pod gets one of the bundled example dumps (real Envoy output,
examples/rotation) with a certificate of its own for its own identity, issued by one root the
snapshot's `istio-ca-root-cert` ConfigMap names, so the certificate checks do their real work. The
first namespace is `shop`, whose first workloads are the frontend, orders and payments Services
the example dumps' outbound clusters point at.

    python benchmarks/synth.py DIR --pods 5000 [--peer-authentications P] [--seed 1]

`--peer-authentications P` (with few pods) makes the PeerAuthentication-heavy mesh of issue 10.
The generator writes the files directly, in the snapshot layout of kubectl_mtls/sources/snapshot.py.
"""

from __future__ import annotations

import argparse
import base64
import random
import sys
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from harness.pki import Issued, make_root, make_workload  # noqa: E402
from harness.scenarios import _pa, pod_object, proxy_status_table  # noqa: E402

from kubectl_mtls.sources.kinds import KINDS  # noqa: E402

EXAMPLE = REPO / "examples" / "rotation"
TEMPLATES = sorted((EXAMPLE / "proxies" / "shop").glob("*.json"))
ROOT_NS = "istio-system"
PODS_PER_WORKLOAD = 4
PODS_PER_NAMESPACE = 100
CHAIN_MARK = b"@@CHAIN@@"
NODE_MARK = b"@@NODE@@"
TIMES = ["2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-02-01T10:00:00Z"]  # ties on purpose


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def dump_templates(root: Issued) -> list[bytes]:
    """The example dumps, byte for byte as istioctl printed them (one-space indent: the reader's fast
    path), with our root in ROOTCA and marks where each pod's chain and node id go."""
    out = []
    for path in TEMPLATES:
        raw = path.read_bytes()
        dump = orjson.loads(raw)
        swaps = {}
        for config in dump["configs"]:
            kind = config.get("@type", "")
            if kind.endswith("BootstrapConfigDump"):
                swaps[config["bootstrap"]["node"]["id"]] = NODE_MARK.decode()
            if kind.endswith("SecretsConfigDump"):
                for entry in config.get("dynamic_active_secrets", []):
                    secret = entry["secret"]
                    if "tls_certificate" in secret:
                        swaps[secret["tls_certificate"]["certificate_chain"]["inline_bytes"]] = CHAIN_MARK.decode()
                    if "validation_context" in secret:
                        swaps[secret["validation_context"]["trusted_ca"]["inline_bytes"]] = _b64(root.cert_pem)
        for old, new in swaps.items():
            assert raw.count(f'"{old}"'.encode()) == 1, f"{path.name}: {old[:20]}... is not unique"
            raw = raw.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
        out.append(raw)
    return out


def _meta(ns: str, name: str, created: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, **extra}
    if created:
        meta["creationTimestamp"] = created
    return meta


class Mesh:
    """The objects of one synthetic mesh; `write` puts them and the dumps into a snapshot directory."""

    def __init__(self, pods: int, peer_authentications: int | None = None, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        self.pod_count = pods
        self.workloads = max(1, -(-pods // PODS_PER_WORKLOAD))
        self.namespaces = ["shop"] + [f"ns-{i:05d}" for i in range(1, max(1, -(-pods // PODS_PER_NAMESPACE)))]
        # workload index -> (namespace, app); the first three are what the example dumps call
        self.apps = [
            (self.namespaces[w * len(self.namespaces) // self.workloads], self._app_name(w))
            for w in range(self.workloads)
        ]
        self.objects: dict[str, list[dict[str, Any]]] = {}
        self.pa_count = pods // 2 if peer_authentications is None else peer_authentications

    @staticmethod
    def _app_name(w: int) -> str:
        return ("frontend", "orders", "payments")[w] if w < 3 else f"app-{w:05d}"

    def build(self) -> None:
        rng = self.rng
        pods, services, accounts = [], [], []
        for w, (ns, app) in enumerate(self.apps):
            services.append(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": _meta(ns, app),
                    "spec": {
                        "selector": {"app": app},
                        "ports": [{"name": "http", "port": 8080, "targetPort": 8080}],
                    },
                }
            )
            accounts.append({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(ns, app)})
            for i in range(PODS_PER_WORKLOAD):
                index = w * PODS_PER_WORKLOAD + i
                if index >= self.pod_count:
                    break
                sidecar = "absent" if rng.random() < 0.03 else "present"
                pod = pod_object(
                    ns,
                    f"{app}-5d8c7b9f6-{index:06x}",
                    app,
                    app,
                    sidecar=sidecar,
                    owner=("ReplicaSet", f"{app}-5d8c7b9f6"),
                    created=rng.choice(TIMES),
                )
                pod["metadata"]["labels"]["version"] = "v1" if i % 2 == 0 else "v2"
                pods.append(pod)
        namespaces = [
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"istio-injection": "enabled"} if rng.random() > 0.05 else {}},
            }
            for ns in [ROOT_NS, *self.namespaces]
        ]
        self.objects = {
            "pods": pods,
            "namespaces": namespaces,
            "services": services,
            "serviceaccounts": accounts,
            "peerauthentications": self._peer_authentications(),
            "destinationrules": self._destination_rules(),
            "authorizationpolicies": self._authorization_policies(),
            "secrets": [],
        }

    def _peer_authentications(self) -> list[dict[str, Any]]:
        rng = self.rng
        out = [_pa(ROOT_NS, "default", "STRICT", TIMES[0])]
        for ns in self.namespaces:
            if rng.random() < 0.2:
                out.append(_pa(ns, "default", rng.choice(["PERMISSIVE", "STRICT"]), rng.choice(TIMES)))
        # About two workload policies per workload. With more policies than workloads (issue 10's
        # 10,000 policies for 4 pods) the rest are for workloads elsewhere that have no pod here.
        targets = list(self.apps)
        while len(targets) < self.pa_count // 2:
            w = len(targets)
            targets.append((f"ns-{len(self.namespaces) + w // 25:05d}", f"app-{w:05d}"))
        for i in range(max(0, self.pa_count - len(out))):
            ns, app = targets[i % len(targets)]
            shape = rng.random()
            if shape < 0.05:
                match = {"app": f"{app}-retired"}  # selects nothing: peerauthn-conflict
            elif shape < 0.35:
                match = {"app": app, "version": rng.choice(["v1", "v2"])}
            else:
                match = {"app": app}
            ports = {8080: "PERMISSIVE"} if rng.random() < 0.1 else None
            mode = rng.choice(["STRICT", "STRICT", "PERMISSIVE", "UNSET"])
            out.append(_pa(ns, f"{app}-{i}", mode, rng.choice(TIMES), match, ports))
        return out

    def _destination_rules(self) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        for i in range(max(1, self.pod_count // 10)):
            ns, app = self.apps[rng.randrange(len(self.apps))]
            host = app if rng.random() < 0.3 else f"{app}.{ns}.svc.cluster.local"
            spec: dict[str, Any] = {
                "host": host,
                "trafficPolicy": {"tls": {"mode": "DISABLE" if rng.random() < 0.05 else "ISTIO_MUTUAL"}},
            }
            if rng.random() < 0.5:
                spec["subsets"] = [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")]
            if rng.random() < 0.2:
                spec["exportTo"] = ["."]
            # A client-side copy in another namespace now and then: a rule the lookup's first step finds.
            where = ns if rng.random() < 0.9 else rng.choice(self.namespaces)
            if where != ns and "." not in host:
                spec["host"] = f"{app}.{ns}.svc.cluster.local"
            out.append(
                {
                    "apiVersion": "networking.istio.io/v1",
                    "kind": "DestinationRule",
                    "metadata": _meta(where, f"{app}-{i}", rng.choice(TIMES)),
                    "spec": spec,
                }
            )
        return out

    def _authorization_policies(self) -> list[dict[str, Any]]:
        rng = self.rng
        out = []
        for i in range(max(1, self.pod_count // 10)):
            ns, app = self.apps[rng.randrange(len(self.apps))]
            caller_ns, caller = self.apps[rng.randrange(len(self.apps))]
            deny = rng.random() < 0.1
            source = (
                {"notNamespaces": [ns, caller_ns]}
                if deny
                else {"principals": [f"cluster.local/ns/{caller_ns}/sa/{caller}"]}
            )
            out.append(
                {
                    "apiVersion": "security.istio.io/v1",
                    "kind": "AuthorizationPolicy",
                    "metadata": _meta(ns, f"{app}-{i}", rng.choice(TIMES)),
                    "spec": {
                        "selector": {"matchLabels": {"app": app}},
                        "action": "DENY" if deny else "ALLOW",
                        "rules": [{"from": [{"source": source}], "to": [{"operation": {"ports": ["8080"]}}]}],
                    },
                }
            )
        return out

    def write(self, directory: Path) -> None:
        """The snapshot: kubernetes/*.json, a dump per sidecar pod, proxy-status, the manifest."""
        if not self.objects:
            self.build()
        root = make_root()
        templates = dump_templates(root)
        kube = directory / "kubernetes"
        kube.mkdir(parents=True, exist_ok=True)
        configmaps = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(ROOT_NS, "istio-ca-root-cert"),
                "data": {"root-cert.pem": root.cert_pem.decode()},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(ROOT_NS, "istio"),
                "data": {"mesh": "rootNamespace: istio-system\ntrustDomain: cluster.local\n"},
            },
        ]
        # Every kind a check may read: the ones not generated are listed, and empty.
        listed = {plural: [] for plural in KINDS} | self.objects | {"configmaps": configmaps}
        for plural, items in listed.items():
            (kube / f"{plural}.json").write_bytes(orjson.dumps({"items": items}))
        rows = []
        for number, pod in enumerate(self.objects["pods"]):
            meta = pod["metadata"]
            ns, name = meta["namespace"], meta["name"]
            if "security.istio.io/tlsMode" not in meta["labels"]:
                continue  # no sidecar, no dump
            # Each pod its own certificate, for its own identity: per-pod parsing is real work.
            cert = make_workload(root, ns, pod["spec"]["serviceAccountName"], chain=[root], hours=24 * 365)
            dump = (
                templates[number % len(templates)]
                .replace(CHAIN_MARK, _b64(cert.cert_pem).encode())
                .replace(NODE_MARK, f"sidecar~127.0.0.1~{name}.{ns}~{ns}.svc.cluster.local".encode())
            )
            target = directory / "proxies" / ns / f"{name}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(dump)
            rows.append((name, ns, {}))
        (directory / "istio").mkdir(exist_ok=True)
        (directory / "istio" / "proxy-status.txt").write_text(proxy_status_table(rows))
        manifest = {
            "format": "kubectl-mtls-snapshot",
            "version": 1,
            "created": "2026-06-01T00:00:00Z",
            "source": "synthetic (benchmarks/synth.py)",
            "scope": None,
            "default_namespace": "shop",
            "pods": len(self.objects["pods"]),
            "proxies": len(rows),
            "objects": {k: len(v) for k, v in self.objects.items()} | {"configmaps": len(configmaps)},
            "incomplete": [],
        }
        (directory / "snapshot.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))


def write_snapshot(directory: Path, pods: int, peer_authentications: int | None = None, seed: int = 1) -> Mesh:
    mesh = Mesh(pods, peer_authentications, seed)
    mesh.write(directory)
    return mesh


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--peer-authentications", type=int, help="default: pods / 2")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.directory.exists() and any(args.directory.iterdir()):
        parser.error(f"{args.directory} is not empty")
    mesh = write_snapshot(args.directory, args.pods, args.peer_authentications, args.seed)
    print(", ".join(f"{len(v)} {k}" for k, v in mesh.objects.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
