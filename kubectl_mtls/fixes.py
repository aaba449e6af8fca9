"""Turn findings into one-line verdicts and the command that fixes them."""

from __future__ import annotations

from typing import Any

from .model import Proxy
from .normalize.certs import verify_chain


def restart_command(proxy: Proxy) -> str:
    """Restart through the pod's owner when known (keeps replicas), else delete the pod."""
    pod = proxy.pod or {}
    meta = pod.get("metadata") or {}
    name = proxy.model["pod"]
    # a command spanning clusters says which one
    where = f"-n {proxy.model['namespace']}" + (f" --context {proxy.context}" if proxy.context else "")
    for owner in meta.get("ownerReferences") or []:
        kind, owner_name = owner.get("kind"), str(owner.get("name") or "")
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and owner_name.endswith(f"-{template_hash}"):
            return f"kubectl rollout restart deployment/{owner_name.removesuffix('-' + template_hash)} {where}"
        if kind in ("StatefulSet", "DaemonSet"):
            return f"kubectl rollout restart {kind.lower()}/{owner_name} {where}"
    return f"kubectl delete pod {name} {where}"


def _newest_root(*proxies: Proxy) -> str | None:
    roots = [r for p in proxies for r in p.roots]
    if not roots:
        return None
    return max(roots, key=lambda r: r.info["not_before"]).info["fingerprint_sha256"]  # type: ignore[no-any-return]


def _signing_root(proxy: Proxy, moment: Any) -> str | None:
    """Which of the pod's own roots its workload chain verifies to."""
    for root in proxy.roots:
        ok, _ = verify_chain([c.cert for c in proxy.chain], [root.cert], moment)
        if ok:
            return root.info["fingerprint_sha256"]  # type: ignore[no-any-return]
    return None


def _short(fp: str | None) -> str:
    return (fp[:23] + "…") if fp else "unknown root"


def rootdiff_verdict(src: Proxy, dst: Proxy, result: dict[str, Any], moment: Any = None) -> tuple[str, str | None]:
    for side in (src, dst):
        kind = side.model["sidecar"]
        if kind == "absent":
            return (
                f"{side.ref} has no istio-proxy sidecar, so it neither presents nor verifies Istio certificates",
                f"kubectl label namespace {side.model['namespace']} istio-injection=enabled --overwrite && "
                + restart_command(side),
            )
        if kind == "ambient":
            return (
                f"{side.ref} is an ambient pod: ztunnel holds its certificates, there is no sidecar to compare",
                f"istioctl ztunnel-config certificates -n {side.model['namespace']}",
            )
        if not side.chain or not side.roots:
            missing = "workload certificate (secret default)" if not side.chain else "roots (secret ROOTCA)"
            return (
                f"{side.ref} has no {missing}: its sidecar did not get it from istiod (see istiod's CSR errors)",
                restart_command(side),
            )
    if result["source_trusted_by_destination"] and result["destination_trusted_by_source"]:
        if not result["only_in_source"] and not result["only_in_destination"]:
            return f"roots match ({len(src.roots)}) and each side trusts the other's certificate", None
        newest = _newest_root(src, dst)
        lacking = [p for p in (src, dst) if newest not in p.root_fingerprints()]
        names = " and ".join(p.ref for p in lacking)
        return (
            f"roots differ but each side still trusts the other (a root rotation in progress?): "
            f"{names} lacks the newest root {_short(newest)}",
            " && ".join(restart_command(p) for p in lacking) or None,
        )
    newest = _newest_root(src, dst)
    stale = [p for p in (src, dst) if newest not in p.root_fingerprints()]
    current = [p for p in (src, dst) if p not in stale]
    signer = _signing_root(stale[0], moment) if len(stale) == 1 else None
    if signer is not None and current and signer not in current[0].root_fingerprints():
        # The usual rotation fault: one pod was not restarted and still lives entirely under an old root.
        old, new = stale[0], current[0]
        return (
            f"{old.ref} still trusts only older roots and holds a certificate issued under "
            f"{_short(signer)}, while {new.ref} moved to the newest root {_short(newest)}: "
            f"restart {old.ref} to load the new root and get a new certificate",
            restart_command(old),
        )
    problems, commands = [], []
    for chain_side, roots_side, ok in (
        (src, dst, result["source_trusted_by_destination"]),
        (dst, src, result["destination_trusted_by_source"]),
    ):
        if ok:
            continue
        signer = _signing_root(chain_side, moment) if moment is not None else None
        if signer is not None and signer == newest:
            problems.append(
                f"{roots_side.ref} does not trust the newest root {_short(signer)} that signed {chain_side.ref}'s "
                "certificate: it holds old roots"
            )
            commands.append(restart_command(roots_side))
        elif signer is not None:
            problems.append(
                f"{chain_side.ref}'s certificate was issued under root {_short(signer)}, which {roots_side.ref} "
                "does not trust: the pod has a certificate from an old or different CA"
            )
            commands.append(restart_command(chain_side))
        else:
            problems.append(
                f"{roots_side.ref} does not trust {chain_side.ref}'s certificate (issuer "
                f"{chain_side.model['certificates'][0]['issuer'] or 'unknown'}), and neither does {chain_side.ref}'s "
                "own ROOTCA: its CA is not a trusted root anywhere; fix the CA (cacerts) and restart"
            )
            commands.append(restart_command(chain_side))
    unique = list(dict.fromkeys(commands))
    return "; ".join(problems), " && ".join(unique) or None
