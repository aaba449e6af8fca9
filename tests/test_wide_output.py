"""`-o wide` adds information in every command that accepts it (all that print tables): run as a user
runs it, on the bundled snapshot, each command's wide output shows something its table does not."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_cli

SNAP = ["--snapshot", str(REPO / "examples" / "rotation")]
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"


def leaf_fingerprint(pod: str, length: int) -> str:
    """The start of a pod's workload fingerprint, longer than the table's shortened form shows."""
    proc = run_cli("proxy", pod, "-n", NS, *SNAP, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    return str(json.loads(proc.stdout)["certificates"][0]["fingerprint_sha256"])[:length]


@pytest.mark.parametrize(
    ("args", "only_wide"),
    [
        (["version"], "(Python "),
        (["explain"], "READS"),
        (["explain", "root-mismatch"], "Also reads, when readable:"),
        (["explain", "proxy-tls-errors"], "for scans only with --logs"),
        (["check", "-n", NS, *SNAP], "pods: shop/"),
        (["check", "pair", FRONTEND, "svc/orders", "-n", NS, *SNAP], "evidence: cluster: outbound|8080||orders"),
        (["rootdiff", FRONTEND, ORDERS, "-n", NS, *SNAP], "NOT BEFORE"),
        (["certs", "-n", NS, *SNAP], (FRONTEND, 24)),
        (["proxy", ORDERS, "-n", NS, *SNAP], (ORDERS, 29)),
    ],
)
def test_wide_adds_information(args: list[str], only_wide: str | tuple[str, int]) -> None:
    if isinstance(only_wide, tuple):  # a fingerprint of the bundled snapshot, which is re-recorded now and then
        only_wide = leaf_fingerprint(*only_wide)
    table = run_cli(*args)
    wide = run_cli(*args, "-o", "wide")
    assert wide.returncode == table.returncode, wide.stderr
    assert only_wide in wide.stdout, wide.stdout
    assert only_wide not in table.stdout
