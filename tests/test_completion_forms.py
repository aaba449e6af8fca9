"""Completion offers what each command accepts: check slugs for `explain` and `--ignore`, workloads
(`deploy/NAME`) wherever a pod is asked for, `svc/NAME` for `check pair`'s destination. Through real
kubectl's plugin completion (`kubectl __complete mtls ...`) on the bundled snapshot."""

from __future__ import annotations

from pathlib import Path

from test_completion import EXAMPLE, FRONTEND, NS, ORDERS, complete

from kubectl_mtls.checks.base import all_checks

SNAP = ["--snapshot", str(EXAMPLE), "-n", NS]


def test_explain_and_ignore_complete_check_slugs(tmp_path: Path) -> None:
    values, _ = complete("explain", "", tmp=tmp_path)
    assert values == [c.slug for c in all_checks()]
    values, _ = complete("explain", "root", tmp=tmp_path)
    assert values == ["root-mismatch"]
    values, _ = complete("check", "--ignore", "cert-e", tmp=tmp_path)
    assert values == ["cert-expired", "cert-expiring"]


def test_workloads_complete_where_a_pod_is_asked_for(tmp_path: Path) -> None:
    for command in (["proxy"], ["certs"], ["rootdiff", FRONTEND], ["check", "pod"], ["check", "pair"]):
        values, _ = complete(*command, *SNAP, "deploy/", tmp=tmp_path)
        assert values == ["deploy/frontend", "deploy/orders", "deploy/payments"], command
    values, _ = complete("proxy", *SNAP, "", tmp=tmp_path)
    assert {FRONTEND, ORDERS, "deploy/orders"} <= set(values)
    values, _ = complete("proxy", *SNAP, "deploy/or", tmp=tmp_path)
    assert values == ["deploy/orders"]


def test_pair_destination_completes_services(tmp_path: Path) -> None:
    values, _ = complete("check", "pair", *SNAP, FRONTEND, "", tmp=tmp_path)
    assert {"svc/orders", "svc/payments", ORDERS, "deploy/orders"} <= set(values)
    values, _ = complete("check", "pair", *SNAP, FRONTEND, "svc/o", tmp=tmp_path)
    assert values == ["svc/orders"]
    source, _ = complete("check", "pair", *SNAP, "", tmp=tmp_path)  # SRC is a pod, not a Service
    assert not [v for v in source if v.startswith("svc/")]
