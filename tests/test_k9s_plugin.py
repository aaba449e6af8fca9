"""plugin.yaml: valid for k9s (its own JSON schema, from ../shared/corpus/k9s), and its commands work when
run the way k9s runs them (k9s's variables put into the args, then `sh -c`), against the API double."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import BIN, REPO, corpus_path
from harness.cluster import FakeCluster

PLUGIN = REPO / "plugin.yaml"
EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"
# Keys k9s itself binds in the pods view (and everywhere); a plugin on one of them needs `override`.
K9S_POD_KEYS = {"Shift-R", "Shift-T", "Shift-S", "Shift-I", "Shift-O", "Shift-C", "Shift-M", "Shift-X", "Shift-Z",
                "Shift-J", "Shift-F", "Shift-N", "Shift-A", "Shift-P", "Ctrl-K", "Ctrl-D", "Ctrl-X", "Ctrl-Q",
                "Ctrl-W", "Ctrl-E", "Ctrl-R", "Ctrl-S", "Ctrl-Z", "a", "s", "t", "z", "o", "l", "p", "f", "d", "e",
                "y", "v", "i", "n", "c"}


def plugins() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(PLUGIN.read_text())
    return doc


def schema(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(corpus_path(f"k9s/internal/config/json/schemas/{name}").read_text())
    return loaded


def test_plugin_file_validates_against_k9s_schema() -> None:
    import jsonschema

    jsonschema.Draft7Validator(schema("plugins.json")).validate(plugins())
    # The one-plugin schema would name the plugin after the file: this file must not be read that way.
    assert not jsonschema.Draft7Validator(schema("plugin.json")).is_valid(plugins())


def test_pod_shortcuts() -> None:
    entries = plugins()["plugins"]
    check, rootdiff = entries["mtls-check"], entries["mtls-rootdiff"]
    assert "kubectl mtls check pod '$NAME' -n '$NAMESPACE' --context '$CONTEXT'" in check["args"][-1]
    assert "kubectl mtls rootdiff '$NAME' '$INPUT_PEER'" in rootdiff["args"][-1]
    assert [i["name"] for i in rootdiff["inputs"]] == ["peer"]
    keys = [p["shortCut"] for p in entries.values()]
    assert len(set(keys)) == len(keys)
    for plugin in entries.values():
        assert plugin["scopes"] == ["pods"]
        assert plugin["shortCut"] not in K9S_POD_KEYS or plugin.get("override")
        assert not plugin.get("dangerous") and not plugin.get("background")
    readme = (REPO / "README.md").read_text()
    assert "k9s/plugins/" in readme and "plugin.yaml" in readme


def k9s_substitute(arg: str, env: dict[str, str]) -> str:
    """What k9s does to each arg: every $WORD replaced by its value, longest names first."""
    for token in sorted(re.findall(r"\$(!?[\w\-]+)", arg), key=len, reverse=True):
        value = env[token.upper()]  # an unknown variable is an error in k9s
        arg = arg.replace("$" + token, value)
    return arg


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    objects = []
    for path in sorted((EXAMPLE / "kubernetes").glob("*.json")):
        objects.extend(json.loads(path.read_text())["items"])
    with FakeCluster(tmp_path / "cluster", objects) as fake:
        for pod in (FRONTEND, ORDERS, "payments-5d8c7b9f6-h3m9t"):
            fake.set_proxy(NS, pod, {"dump": str(EXAMPLE / "proxies" / NS / f"{pod}.json")})
        yield fake


def run_plugin(name: str, cluster: FakeCluster, tmp_path: Path, **inputs: str) -> str:
    plugin = plugins()["plugins"][name]
    variables = {"NAME": FRONTEND, "NAMESPACE": NS, "CONTEXT": "fake", **{f"INPUT_{k.upper()}": v for k, v in
                                                                          inputs.items()}}
    args = [k9s_substitute(str(a), variables) for a in plugin["args"]]
    pager = tmp_path / "pager"
    pager.mkdir(exist_ok=True)
    (pager / "less").write_text("#!/bin/sh\nexec cat\n")  # the user's pager, made non-interactive
    (pager / "less").chmod(0o755)
    env = {**os.environ, **cluster.env(), "NO_COLOR": "1"}
    env["PATH"] = os.pathsep.join([str(pager), str(BIN), env["PATH"]])
    proc = subprocess.run([plugin["command"], *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_rootdiff_shortcut_runs_as_k9s_runs_it(cluster: FakeCluster, tmp_path: Path) -> None:
    out = run_plugin("mtls-rootdiff", cluster, tmp_path, peer=ORDERS)
    assert f"fix: kubectl rollout restart deployment/orders -n {NS}" in out


def test_check_shortcut_runs_as_k9s_runs_it(cluster: FakeCluster, tmp_path: Path) -> None:
    out = run_plugin("mtls-check", cluster, tmp_path)
    # kubectl mtls check took its argv
    assert "usage:" not in out and "unrecognized arguments" not in out and "unexpected argument" not in out, out
    assert FRONTEND in out
