"""What a client sidecar sends to one server pod, mTLS or plaintext, and whether the server takes it.

Istio's rules (pilot/pkg/networking/core/cluster_tls.go and the EDS builder):

* No DestinationRule TLS (auto mTLS): the outbound cluster carries `transport_socket_matches`, and only
  endpoints whose EDS metadata says `tlsMode: istio` get Istio mTLS; the others get plaintext. istiod
  sets that metadata when the pod is labelled `security.istio.io/tlsMode: istio` (the injector does it)
  and leaves it out when the pod's PeerAuthentication DISABLEs the port: auto mTLS then sends plaintext
  to a server that accepts only plaintext, and the call works.
* A DestinationRule `tls.mode` wins over auto mTLS: DISABLE is plaintext to every endpoint;
  ISTIO_MUTUAL, MUTUAL and SIMPLE originate TLS to every endpoint.
* A server sidecar in STRICT takes only mTLS, PERMISSIVE takes both, DISABLE only plaintext (its
  inbound chains are all `raw_buffer`, so a TLS ClientHello matches no chain and is closed). A pod
  without a sidecar takes whatever its application speaks: plaintext, for a mesh workload.

Pure: model dicts and words in, words out.
"""

from __future__ import annotations

from typing import Any

TLS_LABEL = "security.istio.io/tlsMode"
TLS_ORIGINATING = ("ISTIO_MUTUAL", "MUTUAL", "SIMPLE")


def endpoint_labelled_istio(has_sidecar: bool, labels: dict[str, str], server_mode: str | None) -> bool:
    """Would istiod put `tlsMode: istio` on this pod's endpoint for a port whose mode is `server_mode`?"""
    if server_mode == "DISABLE":
        return False
    return has_sidecar and labels.get(TLS_LABEL, "istio") == "istio"


def accepts(enforced: str | None, sends: str) -> bool | None:
    """Does a server enforcing `enforced` (inbound mode, "NO_SIDECAR", "REJECTED") take `sends` ("mtls" or
    "plaintext")? None when what it enforces is not known."""
    if enforced == "NO_SIDECAR":
        return sends == "plaintext"
    if enforced in ("REJECTED", "GW_NONE"):  # Envoy rejected the inbound listener / no gateway server there
        return False
    gateway = {  # a gateway's servers on the port (normalize.gateway): the sidecar's traffic arrives as is
        "GW_PLAINTEXT": {"mtls": False, "plaintext": True},
        "GW_ISTIO_MUTUAL": {"mtls": True, "plaintext": False},
        "GW_TLS": {"mtls": False, "plaintext": True},  # the caller's own TLS, carried as bytes
    }
    if enforced in gateway:
        return gateway[enforced][sends]
    table = {
        "STRICT": {"mtls": True, "plaintext": False},
        "PERMISSIVE": {"mtls": True, "plaintext": True},
        "DISABLE": {"mtls": False, "plaintext": True},
        "SIMPLE": {"mtls": False, "plaintext": False},
    }
    return table.get(enforced or "", {}).get(sends)


def destination_rule_of(cluster: dict[str, Any]) -> str | None:
    dr = cluster.get("destination_rule")
    if isinstance(dr, dict) and dr.get("name"):
        return f"{dr.get('namespace')}/{dr['name']}"
    return None


def disable_reason(cluster: dict[str, Any]) -> str:
    """Why a cluster whose tls_mode is DISABLE sends plaintext."""
    dr = destination_rule_of(cluster)
    if dr:
        return f"DestinationRule {dr} sets tls.mode DISABLE (cluster {cluster['name']})"
    return f"cluster {cluster['name']} originates no TLS"


def auto_reason(plain: int | None, total: int | None, why: list[str]) -> str:
    """Why auto mTLS sends plaintext to some endpoints; `why` says what each plaintext server is."""
    share = f"{plain} of {total} endpoint(s)" if plain is not None and total else "the endpoints"
    because = f" ({'; '.join(why)})" if why else ""
    return f"auto mTLS: {share} carry no tlsMode: istio, so the client sends them plaintext{because}"
