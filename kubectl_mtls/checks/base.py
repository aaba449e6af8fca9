"""What a check is: slug, area, severity, what it reads, its function and its `explain` text, together.

Each check module declares its checks with `@check(...)` right above the function; the registry
finds every module in this package, so adding a check is adding one unit (and its tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .context import Context

Finding = dict[str, Any]
SEVERITIES = ("error", "warning", "info")
# Areas in the order the human output shows them, like `linkerd check` categories.
AREAS = (
    "sidecar and sync",
    "policy",
    "certificates and trust",
    "traffic rules",
    "authorization",
    "probes",
    "ambient",
    "logs",
)


@dataclass(frozen=True)
class Check:
    slug: str
    area: str
    severity: str  # the usual severity of its findings; a finding may say otherwise
    title: str  # what holds when the check passes, as one line
    reads: tuple[str, ...]  # inputs (Context.INPUTS); the check is skipped when one is unavailable
    explain: str  # what it looks at / why it breaks mTLS / how to fix it
    run: Callable[[Context], Iterable[Finding]]
    needs_logs: bool = False  # log checks run for one pod by default, for scans only with --logs
    mesh_wide: bool = False  # its findings concern every pod (the CA root, istiod): kept by `check pod` too
    optional: tuple[str, ...] = ()  # inputs read when available; without them the check still runs


REGISTRY: dict[str, Check] = {}


def check(
    slug: str,
    *,
    area: str,
    severity: str,
    title: str,
    reads: tuple[str, ...],
    explain: str,
    needs_logs: bool = False,
    mesh_wide: bool = False,
    optional: tuple[str, ...] = (),
) -> Callable[[Callable[[Context], Iterable[Finding]]], Callable[[Context], Iterable[Finding]]]:
    if area not in AREAS or severity not in SEVERITIES:
        raise ValueError(f"check {slug}: unknown area or severity")

    def register(fn: Callable[[Context], Iterable[Finding]]) -> Callable[[Context], Iterable[Finding]]:
        if slug in REGISTRY:
            raise ValueError(f"check {slug} registered twice")
        REGISTRY[slug] = Check(slug, area, severity, title, reads, explain.strip(), fn, needs_logs, mesh_wide, optional)
        return fn

    return register


def finding(
    check_slug: str,
    severity: str,
    kind: str,
    namespace: str,
    name: str,
    message: str,
    hint: str | None = None,
    **evidence: Any,
) -> Finding:
    """One finding. kind/namespace/name name the object the fix is made on; evidence.pods the pods hit."""
    return {
        "check": check_slug,
        "severity": severity,
        "kind": kind,
        "namespace": namespace,
        "name": name,
        "message": message,
        "hint": hint,
        "evidence": evidence,
    }


def all_checks() -> list[Check]:
    """Every registered check, importing each module of this package once."""
    import importlib
    import pkgutil

    from .. import checks as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("base", "context"):
            importlib.import_module(f"{package.__name__}.{module.name}")
    order = {area: i for i, area in enumerate(AREAS)}
    return sorted(REGISTRY.values(), key=lambda c: (order[c.area], c.slug))


def doc_of(item: Check) -> str:
    return f"{item.slug} ({item.severity}, {item.area})\n{item.title}\n\n{item.explain}\n"


def as_dict(obj: Any) -> dict[str, Any]:
    return obj if isinstance(obj, dict) else {}
