"""Indexes for equality label selectors (`matchLabels`, a Service's `selector`), both directions:

* `SelectorIndex`: objects that carry a selector (policies, Services), asked "which of you select a
  workload with these labels?";
* `LabeledIndex`: labeled objects (pods), asked "which of you does this selector pick?".

Both file entries under (scope, label key, label value) so that a lookup only visits entries that
share a label pair with the question, then checks the whole selector. The scope is whatever the
caller partitions by, usually the namespace. This keeps the cost of `check -A` growing with the mesh
instead of with its square (every policy against every pod).

Only string keys and values take part: Kubernetes labels are strings, and an entry whose labels or
selector hold anything else is compared the slow way, with the caller's own rule, so hostile input
gets exactly the answer a plain loop would give.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
Pair = tuple[str, str]


def string_labels(labels: Any) -> dict[str, str] | None:
    """`labels` when it is a map of strings to strings, else None (compare such an entry the slow way)."""
    if not isinstance(labels, dict):
        return None
    for key, value in labels.items():  # a loop: all() over a generator costs twice as much here
        if not (isinstance(key, str) and isinstance(value, str)):
            return None
    return labels


def subset_of(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Kubernetes/Istio equality selection: every selector pair present on the labels."""
    return all(labels.get(key) == value for key, value in selector.items())


class SelectorIndex(Generic[T]):
    """Entries with a string selector, found by the labels of one workload.

    Each entry is filed under the pair of its selector that the fewest entries share (an
    `istio.io/rev` pair on every policy would make a useless bucket). Entries with an empty selector
    are returned for every workload of their scope. Results come back in insertion order.
    """

    def __init__(self, entries: Iterable[tuple[str, dict[str, str], T]]) -> None:
        listed = list(entries)
        counts = Counter((scope, pair) for scope, selector, _ in listed for pair in selector.items())
        # scope -> (key, value) -> entries: a scope without selectors costs a lookup, not one per label
        self._buckets: dict[str, dict[tuple[str, str], list[tuple[int, dict[str, str], T]]]] = {}
        self._everything: dict[str, list[tuple[int, dict[str, str], T]]] = {}
        for order, (scope, selector, item) in enumerate(listed):
            if not selector:
                self._everything.setdefault(scope, []).append((order, selector, item))
                continue
            pair = min(selector.items(), key=lambda pair: (counts[(scope, pair)], pair))
            self._buckets.setdefault(scope, {}).setdefault(pair, []).append((order, selector, item))

    def matching(self, scope: str, labels: dict[str, str]) -> list[T]:
        """Entries of `scope` whose selector the labels satisfy, in insertion order."""
        found = list(self._everything.get(scope, ()))
        buckets = self._buckets.get(scope)
        if buckets:
            for pair in labels.items():
                for entry in buckets.get(pair, ()):
                    # A selector of one pair is the pair it is filed under, which the labels hold.
                    if len(entry[1]) == 1 or subset_of(entry[1], labels):
                        found.append(entry)
        if len(found) > 1:
            found.sort(key=lambda entry: entry[0])
        return [item for _, _, item in found]


class LabeledIndex(Generic[T]):
    """Labeled entries (pods), found by a selector, within one scope or across all of them."""

    def __init__(self, entries: Iterable[tuple[str, Any, T]]) -> None:
        self._all: list[tuple[Any, T]] = []
        self._by_scope: dict[str, list[tuple[Any, T]]] = {}
        self._buckets: dict[tuple[str | None, str, str], list[tuple[Any, T]]] = {}
        self._odd: dict[str | None, list[tuple[Any, T]]] = {}  # labels that are not a map of strings
        self._across_scopes = False  # the buckets of scope None (every scope), filed when first asked for
        for scope, labels, item in entries:
            entry = (labels, item)
            self._all.append(entry)
            self._by_scope.setdefault(scope, []).append(entry)
            clean = string_labels(labels or {})  # no labels at all: nothing to file, nothing odd
            if clean is None:
                self._odd.setdefault(scope, []).append(entry)
                self._odd.setdefault(None, []).append(entry)
                continue
            for key, value in clean.items():
                self._buckets.setdefault((scope, key, value), []).append(entry)

    def _file_across_scopes(self) -> None:
        # In insertion order, as if filed with the rest: a lookup across scopes is the rare one.
        for entry in self._all:
            clean = string_labels(entry[0] or {})
            for key, value in (clean or {}).items():
                self._buckets.setdefault((None, key, value), []).append(entry)
        self._across_scopes = True

    def in_scope(self, scope: str | None) -> list[T]:
        """Every entry of `scope` (None: all), in insertion order."""
        entries = self._all if scope is None else self._by_scope.get(scope, [])
        return [item for _, item in entries]

    def select(
        self, scope: str | None, selector: dict[str, str], matches: Callable[[Any], bool] | None = None
    ) -> list[T]:
        """Entries of `scope` (None: every scope) that a non-empty string selector picks, in insertion
        order. `matches(labels)` decides for entries whose labels are not a map of strings (default:
        they never match, since a string selector value never equals anything else)."""
        if not selector:
            raise ValueError("an empty selector selects by the caller's rule, not the index's")
        if scope is None and not self._across_scopes:
            self._file_across_scopes()
        if len(selector) == 1:  # every entry filed under the selector's one pair holds it
            ((key, value),) = selector.items()
            picked = self._buckets.get((scope, key, value), [])
        else:
            smallest = min((self._buckets.get((scope, k, v), []) for k, v in selector.items()), key=len)
            picked = [entry for entry in smallest if subset_of(selector, entry[0])]
        odd = self._odd.get(scope)
        if odd and matches is not None:
            chosen = {id(entry) for entry in picked} | {id(entry) for entry in odd if matches(entry[0])}
            pool = self._all if scope is None else self._by_scope.get(scope, [])
            picked = [entry for entry in pool if id(entry) in chosen]
        return [item for _, item in picked]
