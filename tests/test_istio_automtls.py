"""Istio's auto mTLS and server-mode rules, one row per rule (kubectl_mtls/istio/automtls.py)."""

from __future__ import annotations

import pytest

from kubectl_mtls.istio import automtls


@pytest.mark.parametrize(
    ("has_sidecar", "labels", "mode", "labelled"),
    [
        (True, {"security.istio.io/tlsMode": "istio"}, "STRICT", True),
        (True, {}, "PERMISSIVE", True),  # the injector's label is assumed when the pod object lacks it
        (True, {"security.istio.io/tlsMode": "istio"}, "DISABLE", False),  # istiod drops it for DISABLE
        (True, {"security.istio.io/tlsMode": "disabled"}, "STRICT", False),
        (False, {}, "STRICT", False),  # no sidecar, no label
    ],
)
def test_endpoint_label(has_sidecar: bool, labels: dict[str, str], mode: str, labelled: bool) -> None:
    assert automtls.endpoint_labelled_istio(has_sidecar, labels, mode) is labelled


@pytest.mark.parametrize(
    ("enforced", "sends", "ok"),
    [
        ("STRICT", "mtls", True),
        ("STRICT", "plaintext", False),
        ("PERMISSIVE", "mtls", True),
        ("PERMISSIVE", "plaintext", True),
        ("DISABLE", "mtls", False),  # raw_buffer chains only: a ClientHello matches none
        ("DISABLE", "plaintext", True),
        ("NO_SIDECAR", "plaintext", True),
        ("NO_SIDECAR", "mtls", False),
        ("SIMPLE", "mtls", False),
        (None, "mtls", None),  # not read: not known
        ("UNKNOWN", "plaintext", None),
    ],
)
def test_server_accepts(enforced: str | None, sends: str, ok: bool | None) -> None:
    assert automtls.accepts(enforced, sends) is ok


def test_reasons_name_the_rule_and_the_cluster() -> None:
    cluster = {"name": "outbound|80||a.b.svc.cluster.local", "destination_rule": {"namespace": "b", "name": "a-dr"}}
    assert automtls.disable_reason(cluster) == (
        "DestinationRule b/a-dr sets tls.mode DISABLE (cluster outbound|80||a.b.svc.cluster.local)"
    )
    assert "originates no TLS" in automtls.disable_reason({**cluster, "destination_rule": None})
    assert automtls.auto_reason(1, 2, ["b/a-1 has no sidecar"]).startswith("auto mTLS: 1 of 2 endpoint(s)")
