"""Read pods and their proxies from a source and normalize them, concurrently for many pods."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import MtlsError, NotFoundError
from ..model import Proxy
from ..normalize import pod as podinfo
from ..normalize.dump import split
from ..normalize.proxy import build
from ..sources import Source
from ..sources.snapshot import FROM_DUMP, SnapshotSource

if TYPE_CHECKING:
    from .ambient import Ambient

WORKERS = 8  # istioctl calls are mostly waiting on port-forwards; more would load the API server


def load_proxy(
    source: Source,
    namespace: str,
    name: str,
    now: datetime,
    pod: dict[str, Any] | None = None,
    ambient: Ambient | None = None,
    missing: Callable[[Source, str, str], MtlsError] | None = None,
) -> Proxy:
    """One pod's model (an ambient pod's from its node's ztunnel). Errors propagate: commands about
    named pods stop on them. `missing` builds the error for a pod that does not exist (commands pass
    one that names the closest pods)."""
    if pod is None:
        try:
            pod = source.get_pod(namespace, name)
        except NotFoundError:
            if missing is None:
                raise
            raise missing(source, namespace, name) from None
    kind = podinfo.sidecar_kind(pod)
    if kind not in ("present", "native"):
        from .ambient import Ambient, ambient_proxy

        if ambient is None:
            ambient = Ambient(source, now)
        enrolment = podinfo.ambient_enrolment(pod, ambient.namespace_labels(namespace))
        if enrolment is not None:
            return ambient_proxy(ambient, namespace, name, pod, enrolment)
        note = "pod has no istio-proxy sidecar" if kind == "absent" else "ambient pod: ztunnel holds its identity"
        return build(namespace, name, pod, None, now, [note])
    documents = source.proxy_documents(namespace, name)
    from_dump = ((pod.get("metadata") or {}).get("annotations") or {}).get(FROM_DUMP)
    return build(namespace, name, None if from_dump else pod, split(documents), now)


def load_many(
    source: Source, pods: list[dict[str, Any]], now: datetime, workers: int = WORKERS, progress: bool = False
) -> tuple[list[Proxy], list[dict[str, str]]]:
    """Models of many pods; the ones that could not be read go to `incomplete` with the error line.

    Each dump is normalized as soon as it arrives and then dropped: only the small models stay.
    With `progress`, a counter goes to stderr (callers enable it only on a terminal).
    """
    import gc
    import sys
    import threading

    from .ambient import Ambient

    done = [0]
    lock = threading.Lock()
    ambient = Ambient(source, now, workers)  # one read of the ztunnels for every ambient pod

    def one(pod: dict[str, Any]) -> Proxy | dict[str, str]:
        namespace, name = podinfo.name_of(pod)
        try:
            return load_proxy(source, namespace, name, now, pod, ambient)
        except MtlsError as exc:
            return {"namespace": namespace, "pod": name, "error": str(exc)}
        finally:
            if progress:
                with lock:
                    done[0] += 1
                    sys.stderr.write(f"\rreading sidecars: {done[0]}/{len(pods)}\033[K")
                    sys.stderr.flush()

    if isinstance(source, SnapshotSource):
        # Reading a snapshot is parsing, not waiting: more threads only fight over the GIL (about a
        # third more CPU for the same work).
        workers = 1
    # The models are many small long-lived objects and make no reference cycles: without pausing the
    # cyclic collector, it re-walks everything read so far again and again (a seventh of a mesh scan).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            results = list(pool.map(one, pods))
    finally:
        # The models live until the process ends: moved out of the collector's generations, the checks'
        # own collections no longer walk them (a tenth of a mesh scan's CPU at 2,000 pods).
        gc.freeze()
        if collecting:
            gc.enable()
    if progress and pods:
        sys.stderr.write("\r\033[K")
    proxies = [r for r in results if isinstance(r, Proxy)]
    incomplete = [r for r in results if isinstance(r, dict)]
    return proxies, incomplete
