"""Several fake clusters for multi-cluster runs: one Kubernetes API double per context, one kubeconfig
holding every context (or one kubeconfig per context), one istioctl double answering for every
cluster's pods (pod names are unique across clusters; the --context istioctl gets is logged), and
real Envoy sidecars whose PKI each test builds: `IstioCluster` turns a CA setup into the objects
istiod's namespace holds (mesh config, cacerts / istio-ca-secret, istio-ca-root-cert, istiod pod).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from harness.envoy import Mesh, RunningSidecar
from harness.istioctl_double import install
from harness.kubeapi import FakeKubeAPI
from harness.pki import Issued
from harness.scenarios import add_sidecar, pod_object

ISTIO_NS = "istio-system"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class IstioCluster:
    """One cluster's mesh identity setup. `ca` is the certificate istiod (or another signer) signs
    with; `chain` are the certificates above it up to and including the root."""

    context: str
    trust_domain: str = "cluster.local"
    aliases: list[str] = field(default_factory=list)
    setup: str = "plugin"  # plugin | self-signed | istio-csr | spire
    ca: Issued | None = None
    chain: list[Issued] = field(default_factory=list)  # intermediates above `ca`, then the root
    cacerts_roots: list[Issued] = field(default_factory=list)  # root-cert.pem (default: the chain's root)
    published: list[Issued] = field(default_factory=list)  # istio-ca-root-cert (default: the CA's roots)

    @property
    def root(self) -> Issued:
        return self.chain[-1] if self.chain else self.ca  # type: ignore[return-value]

    def mesh_config(self) -> str:
        config: dict[str, Any] = {"trustDomain": self.trust_domain, "rootNamespace": ISTIO_NS}
        if self.aliases:
            config["trustDomainAliases"] = self.aliases
        if self.setup == "istio-csr":
            config["defaultConfig"] = {"caAddress": "cert-manager-istio-csr.cert-manager.svc:443"}
        return yaml.safe_dump(config)

    def objects(self) -> list[dict[str, Any]]:
        assert self.ca is not None
        roots = self.cacerts_roots or [self.root]
        published = self.published or roots
        objs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ISTIO_NS}},
            _configmap("istio", {"mesh": self.mesh_config()}),
            _configmap("istio-ca-root-cert", {"root-cert.pem": b"".join(r.leaf_pem for r in published).decode()}),
        ]
        env = [{"name": "PILOT_TRACE_SAMPLING", "value": "1"}]
        if self.setup in ("istio-csr", "spire"):
            env.append({"name": "ENABLE_CA_SERVER", "value": "false"})
        objs.append(_istiod(env))
        if self.setup == "plugin":
            objs.append(
                _secret(
                    "cacerts",
                    {
                        "ca-cert.pem": self.ca.leaf_pem,
                        "ca-key.pem": self.ca.key_pem,  # the API serves it; kubectl-mtls must never keep it
                        "root-cert.pem": b"".join(r.leaf_pem for r in roots),
                        "cert-chain.pem": b"".join(c.leaf_pem for c in [self.ca, *self.chain]),
                    },
                )
            )
        elif self.setup == "self-signed":
            objs.append(_secret("istio-ca-secret", {"ca-cert.pem": self.ca.leaf_pem, "ca-key.pem": self.ca.key_pem}))
        return objs


def _configmap(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ISTIO_NS}, "data": data}


def _secret(name: str, data: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": ISTIO_NS},
        "data": {k: _b64(v) for k, v in data.items()},
    }


def _istiod(env: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "istiod-7d4f8b9c6-x2kqz", "namespace": ISTIO_NS, "labels": {"app": "istiod"}},
        "spec": {"containers": [{"name": "discovery", "image": "docker.io/istio/pilot:1.28.0", "env": env}]},
        "status": {"phase": "Running"},
    }


class MultiCluster:
    """API doubles per context, a kubeconfig with all of them, one istioctl double, one Envoy mesh."""

    def __init__(self, workdir: Path, contexts: list[str], mesh: Mesh) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.apis = {c: FakeKubeAPI([]) for c in contexts}
        self.mesh = mesh
        self.mapping: dict[str, Any] = {}
        self.map_file = self.workdir / "istioctl-map.json"
        self.log_file = self.workdir / "istioctl-calls.jsonl"
        self.bin = self.workdir / "bin"
        self.kubeconfig = self.workdir / "kubeconfig"
        self._namespaces: set[tuple[str, str]] = set()

    def __enter__(self) -> MultiCluster:
        merged: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "contexts": [], "users": []}
        for context, api in self.apis.items():
            api.start()
            single = yaml.safe_load(Path(api.write_kubeconfig(self.context_kubeconfig(context), context)).read_text())
            for key in ("clusters", "contexts", "users"):
                merged[key] += single[key]
        merged["current-context"] = next(iter(self.apis))
        self.kubeconfig.write_text(yaml.safe_dump(merged, sort_keys=False))
        self.map_file.write_text("{}")
        install(self.bin, self.map_file, self.log_file)
        return self

    def __exit__(self, *exc: object) -> None:
        for api in self.apis.values():
            api.stop()

    def context_kubeconfig(self, context: str) -> Path:
        """A kubeconfig holding only this context (for --kubeconfig per context)."""
        return self.workdir / f"kubeconfig-{context}"

    def serve(self, cluster: IstioCluster) -> None:
        for obj in cluster.objects():
            self.apis[cluster.context].add(obj)

    def add_sidecar(
        self,
        context: str,
        namespace: str,
        pod: str,
        service_account: str,
        cert: Issued,
        roots: list[Issued],
        pod_extra: dict[str, Any] | None = None,
        **kw: Any,
    ) -> RunningSidecar:
        """A real Envoy holding `cert` and `roots`, its Pod in the context's API, istioctl pointed at it."""
        running = add_sidecar(self.mesh, namespace, pod, service_account, cert, roots, **kw)
        api = self.apis[context]
        if (context, namespace) not in self._namespaces:
            self._namespaces.add((context, namespace))
            api.add({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
        obj = pod_object(namespace, pod, pod.split("-")[0], service_account)
        for key, value in (pod_extra or {}).items():
            obj["spec"][key] = value
        api.add(obj)
        self.mapping[f"{pod}.{namespace}"] = {"admin": running.admin_url}
        self.map_file.write_text(json.dumps(self.mapping))
        return running

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KUBECACHEDIR": str(self.workdir / "kubecache"),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            **extra,
        }

    def istioctl_calls(self) -> list[list[str]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line)["argv"] for line in self.log_file.read_text().splitlines() if line.strip()]
