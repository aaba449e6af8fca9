"""Where the kube-apiserver calls into the cluster by itself: admission webhooks, aggregated API
servers and CRD conversion webhooks, each through a Service (`clientConfig.service`). The apiserver
runs outside the mesh, so such a call never carries a mesh certificate."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_PORT = 443  # the Service port the apiserver dials when `service.port` is left out


@dataclass(frozen=True)
class ServiceCall:
    kind: str  # the object that configures the call: ValidatingWebhookConfiguration, APIService, ...
    name: str  # its name (cluster-scoped)
    caller: str  # what the apiserver calls: the webhook's name, the API group/version, the CRD
    namespace: str  # the Service's
    service: str
    port: int  # the Service port


def _service(ref: Any) -> tuple[str, str, int] | None:
    if not isinstance(ref, dict):
        return None
    namespace, name, port = ref.get("namespace"), ref.get("name"), ref.get("port", DEFAULT_PORT)
    if not isinstance(namespace, str) or not isinstance(name, str) or not namespace or not name:
        return None
    if not isinstance(port, int) or isinstance(port, bool):
        return None
    return namespace, name, port


def _name(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    return str((meta or {}).get("name") or "") if isinstance(meta, dict) else ""


def webhook_calls(kind: str, configuration: dict[str, Any]) -> list[ServiceCall]:
    """Validating/MutatingWebhookConfiguration: one call per webhook served by a Service."""
    calls = []
    webhooks = configuration.get("webhooks")
    for webhook in webhooks if isinstance(webhooks, list) else []:
        if not isinstance(webhook, dict):
            continue
        ref = _service((webhook.get("clientConfig") or {}).get("service"))
        if ref:
            calls.append(ServiceCall(kind, _name(configuration), str(webhook.get("name") or "(unnamed)"), *ref))
    return calls


def apiservice_calls(apiservice: dict[str, Any]) -> list[ServiceCall]:
    """APIService: an aggregated API served by a Service (none for the apiserver's own groups)."""
    spec = apiservice.get("spec") or {}
    ref = _service(spec.get("service") if isinstance(spec, dict) else None)
    if not ref:
        return []
    caller = f"{spec.get('group') or ''}/{spec.get('version') or ''}"
    return [ServiceCall("APIService", _name(apiservice), caller, *ref)]


def conversion_calls(crd: dict[str, Any]) -> list[ServiceCall]:
    """CustomResourceDefinition with `conversion.strategy: Webhook` (v1; v1beta1's webhookClientConfig too)."""
    spec = crd.get("spec") or {}
    conversion = spec.get("conversion") if isinstance(spec, dict) else None
    if not isinstance(conversion, dict) or conversion.get("strategy") != "Webhook":
        return []
    config = (conversion.get("webhook") or {}).get("clientConfig") or conversion.get("webhookClientConfig") or {}
    ref = _service(config.get("service") if isinstance(config, dict) else None)
    if not ref:
        return []
    return [ServiceCall("CustomResourceDefinition", _name(crd), f"conversion of {_name(crd)}", *ref)]
