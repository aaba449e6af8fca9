"""The fix for a finding, as a command a person can paste, computed in one place for every command.

Below the checks and the commands (both import it; it imports neither). A fix is correct for the object
it names: a workload is restarted through its owner (Deployment through the ReplicaSet's
pod-template-hash, StatefulSet, DaemonSet); a Job's pod or a finished pod is never deleted (the advice
says what to do instead); a namespace is labelled for injection only in a way that keeps what its
labels already say (with `istio.io/rev`, setting `istio-injection` would override the revision).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

from .model import Proxy
from .normalize.certs import verify_chain

FINISHED = ("Succeeded", "Failed")
_CRONJOB_RUN = re.compile(r"^(?P<cronjob>.+)-\d{8,}$")  # a CronJob names its Jobs NAME-<minutes since 1970>


def _meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    value = (obj or {}).get("metadata")
    return value if isinstance(value, dict) else {}


def is_command(fix: str | None) -> bool:
    """A fix that can be pasted as it is (the others are advice in words)."""
    return bool(fix) and str(fix).startswith(("kubectl ", "istioctl "))


def then(*steps: str | None) -> str | None:
    """Steps in order: commands joined with `&&` (paste once), advice with `; then`."""
    present = [s for s in steps if s]
    if not present:
        return None
    out = present[0]
    for previous, step in itertools.pairwise(present):
        out += (" && " if is_command(previous) and is_command(step) else "; then ") + step
    return out


def owner_of(pod: dict[str, Any]) -> tuple[str, str] | None:
    """(kind, name) of what re-creates the pod: Deployment (through its ReplicaSet), StatefulSet,
    DaemonSet, Job, or another controller (ReplicaSet, a custom kind); None for a bare pod."""
    meta = _meta(pod)
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    owners.sort(key=lambda o: not o.get("controller"))  # the controller first
    for owner in owners:
        kind, name = str(owner.get("kind") or ""), str(owner.get("name") or "")
        if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
            return "Deployment", name.removesuffix(f"-{template_hash}")
        if kind and name:
            return kind, name
    return None


def restart_pod(pod: dict[str, Any] | None, namespace: str, name: str, context: str | None = None) -> str:
    """How to give a pod a fresh sidecar (new config, certificate and roots): a command, or advice for
    the pods a restart command would harm. `context`: a command spanning clusters says which one."""
    pod = pod or {}
    phase = (pod.get("status") or {}).get("phase")
    owner = owner_of(pod)
    where = f"-n {namespace}" + (f" --context {context}" if context else "")
    if phase in FINISHED:
        return (
            f"nothing to restart: pod {namespace}/{name} has finished ({phase}) and holds no connection; "
            "the next pod of its workload starts with a current sidecar"
        )
    if owner is not None and owner[0] in ("Deployment", "StatefulSet", "DaemonSet"):
        return f"kubectl rollout restart {owner[0].lower()}/{owner[1]} {where}"
    if owner is not None and owner[0] == "Job":
        run = _CRONJOB_RUN.match(owner[1])
        later = (
            f"the next run of CronJob {run.group('cronjob')} (if it made this Job) starts with a fresh sidecar"
            if run
            else "a Job run started later gets a fresh sidecar"
        )
        return (
            f"do not delete pod {namespace}/{name}: it runs Job {owner[1]}, and deleting it restarts the Job's "
            f"work from the beginning; let it finish; {later}"
        )
    if owner is not None:  # a ReplicaSet without a Deployment, a custom controller: it re-creates the pod
        return f"kubectl delete pod {name} {where}"
    # A bare pod: deleting it would lose it. replace --force deletes and re-creates it from its own spec.
    in_context = f" --context {context}" if context else ""
    return f"kubectl get pod {name} {where} -o yaml | kubectl replace --force{in_context} -f -"


def restart_command(proxy: Proxy) -> str:
    """restart_pod for a sidecar's model (in its cluster's context, when the command spans several)."""
    return restart_pod(proxy.pod, proxy.model["namespace"], proxy.model["pod"], proxy.context)


def enable_injection(namespace: str, labels: dict[str, Any] | None, context: str | None = None) -> str | None:
    """The label change that turns sidecar injection on for a namespace, given its labels; None when
    it is already on. `labels` None means the namespace could not be read: the advice then says what to
    look for, since a wrong label would override a revision."""
    label = f"kubectl label namespace {namespace}"
    where = f" --context {context}" if context else ""
    if labels is None:
        return (
            f"if namespace {namespace} has no istio.io/rev label: {label} istio-injection=enabled{where} "
            "(with istio.io/rev=REV, restarting is enough)"
        )
    injection, revision = labels.get("istio-injection"), labels.get("istio.io/rev")
    if injection == "enabled" or (revision and injection is None):
        return None  # injection is on: the pod predates it and only needs a restart
    if revision:  # istio-injection=disabled hides the revision's webhook: remove it, never overwrite it
        return f"{label} istio-injection-{where}"
    if injection is not None:
        return f"{label} istio-injection=enabled --overwrite{where}"
    return f"{label} istio-injection=enabled{where}"


def inject_sidecar(
    pod: dict[str, Any] | None,
    namespace: str,
    name: str,
    labels: dict[str, Any] | None,
    context: str | None = None,
) -> str:
    """A pod without a sidecar: what turns injection on for it, then the restart that injects it."""
    annotations, pod_labels = _meta(pod).get("annotations") or {}, _meta(pod).get("labels") or {}
    opt_out = annotations.get("sidecar.istio.io/inject") or pod_labels.get("sidecar.istio.io/inject")
    first: str | None
    if str(opt_out).lower() == "false":
        first = "remove sidecar.istio.io/inject=false from the workload's pod template"
    else:
        first = enable_injection(namespace, labels, context)
    restart = restart_pod(pod, namespace, name, context)
    return then(first, restart) or restart


def edit_policy(kind: str, namespace: str, name: str, change: str) -> str:
    """The command that opens the policy to change, with the change as a shell comment."""
    return f"kubectl edit {kind} {name} -n {namespace}   # {change}"


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


def rootdiff_verdict(
    src: Proxy,
    dst: Proxy,
    result: dict[str, Any],
    moment: Any = None,
    namespace_labels: dict[str, dict[str, Any] | None] | None = None,
) -> tuple[str, str | None]:
    """One line saying why two sidecars do (not) trust each other, and the fix. `namespace_labels`
    (namespace -> labels, None if unreadable) is needed only when a side has no sidecar."""
    for side in (src, dst):
        kind = side.model["sidecar"]
        if kind == "absent":
            ns = side.model["namespace"]
            return (
                f"{side.ref} has no istio-proxy sidecar, so it neither presents nor verifies Istio certificates",
                inject_sidecar(side.pod, ns, side.model["pod"], (namespace_labels or {}).get(ns)),
            )
        if kind == "ambient" and not (side.chain and side.roots):  # its node's ztunnel holds them
            ztunnel = str((side.model.get("ambient") or {}).get("ztunnel") or "")
            zns, _, zpod = ztunnel.partition("/")
            return (
                f"{side.ref} is an ambient pod and its node's ztunnel ({ztunnel or 'not read'}) holds no "
                "certificate for its identity",
                f"istioctl ztunnel-config certificates {zpod}.{zns}"
                if ztunnel
                else "kubectl get pods -n istio-system -l app=ztunnel -o wide",
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
            then(*(restart_command(p) for p in lacking)),
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
    return "; ".join(problems), then(*unique)
