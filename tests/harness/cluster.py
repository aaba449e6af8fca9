"""A whole fake cluster for end-to-end runs: the Kubernetes API double plus the istioctl double,
wired to real Envoy sidecars, and the environment that makes `kubectl mtls` use both."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from harness.istioctl_double import install
from harness.kubeapi import FakeKubeAPI


class FakeCluster:
    def __init__(self, workdir: Path, objects: list[dict[str, Any]] | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api = FakeKubeAPI(objects or [])
        self.mapping: dict[str, Any] = {}
        self.map_file = self.workdir / "istioctl-map.json"
        self.log_file = self.workdir / "istioctl-calls.jsonl"
        self.bin = self.workdir / "bin"
        self.kubeconfig = self.workdir / "kubeconfig"

    def __enter__(self) -> FakeCluster:
        self.api.start()
        self.api.write_kubeconfig(self.kubeconfig, context="fake")
        self.save_mapping()
        install(self.bin, self.map_file, self.log_file)
        return self

    def __exit__(self, *exc: object) -> None:
        self.api.stop()

    def save_mapping(self) -> None:
        self.map_file.write_text(json.dumps(self.mapping))

    def add_sidecar(self, namespace: str, pod: str, admin_url: str) -> None:
        self.mapping[f"{pod}.{namespace}"] = {"admin": admin_url}
        self.save_mapping()

    def set_proxy(self, namespace: str, pod: str, entry: dict[str, Any]) -> None:
        """Any istioctl double entry: {"dump": path}, {"fail": text}, {"hang": true}, {"garbage": text}."""
        self.mapping[f"{pod}.{namespace}"] = entry
        self.save_mapping()

    def serve_world(self, world: Any) -> None:
        """A scenarios.CheckWorld: its objects, which Envoy answers for which pod, proxy-status and logs."""
        from harness.scenarios import proxy_status_table

        for obj in world.objects:
            self.api.add(obj)
        for (ns, pod), admin in world.admins.items():
            self.mapping[f"{pod}.{ns}"] = {"admin": admin}
            self.api.set_log(ns, pod, "istio-proxy", "")  # a quiet sidecar still has a log
        for (ns, pod, container), text in world.logs.items():
            self.api.set_log(ns, pod, container, text)
        self.set_proxy_status(proxy_status_table(world.proxy_rows))

    def set_proxy_status(self, text: str) -> None:
        """What `istioctl proxy-status` prints (any format the tool reads)."""
        self.mapping["__proxy_status__"] = text
        self.save_mapping()

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a CLI subprocess: our kubeconfig, our istioctl first on PATH, fresh caches."""
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
