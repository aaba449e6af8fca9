"""`-o wide` adds information in every command that accepts it (all that print tables): run as a user
runs it, on the bundled snapshot, each command's wide output shows something its table does not."""

from __future__ import annotations

import pytest
from conftest import REPO, run_cli

SNAP = ["--snapshot", str(REPO / "examples" / "rotation")]
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"


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
        (["certs", "-n", NS, *SNAP], "18:43:CE:A2:E3:17:16:38:"),
        (["proxy", ORDERS, "-n", NS, *SNAP], "75:45:26:E5:A0:05:8B:E2:7E"),
    ],
)
def test_wide_adds_information(args: list[str], only_wide: str) -> None:
    table = run_cli(*args)
    wide = run_cli(*args, "-o", "wide")
    assert wide.returncode == table.returncode, wide.stderr
    assert only_wide in wide.stdout, wide.stdout
    assert only_wide not in table.stdout
