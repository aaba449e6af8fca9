"""Shell completion: `kubectl_complete-mtls` (kubectl's plugin completion), `kubectl-mtls __complete`,
and what the scripts of `kubectl mtls completion bash|zsh|kubectl` call.

The protocol is cobra's, as kubectl (>= 1.26) speaks it to plugins: the arguments are the words typed
after `kubectl mtls`, the last one being the word under the cursor ("" for a new word). The answer is one
candidate per line (`value<TAB>description`), then a last line `:<directive>`. kubectl does not filter,
so candidates are filtered here by the word's prefix.

Subcommands and flags are read from the argparse parser itself (`parser.build_parser`, which imports only
the command being completed), so a command added later completes with no change here. Namespaces, pods
and kubeconfig names are looked up read-only, with a short timeout; any failure means no candidates,
never an error. Nothing here imports `kubernetes` unless a namespace or pod must be looked up on a live cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

# cobra's ShellCompDirective bits
DEFAULT = 0  # let the shell complete file names
NO_SPACE = 2
NO_FILE = 4
FILTER_DIRS = 16

LOOKUP_TIMEOUT = 3.0  # seconds per API request while completing
DEADLINE = 5.0  # seconds for a whole lookup: a completion must never hang a shell

# Positional arguments that name a pod (the others complete only if they have choices).
POD_DESTS = {"pod", "pods", "src", "dst", "source", "destination", "peer"}
POD_WORDS = {"pod", "pods", "po"}  # a positional right after one of these names a pod
NAMESPACE_WORDS = {"namespace", "namespaces", "ns"}


class _Quiet(argparse.ArgumentParser):
    """A parser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ValueError(message)


@dataclass
class Position:
    """Where the cursor is: which (sub)parser, which positional, which flags were typed before it."""

    parser: argparse.ArgumentParser
    path: list[str] = field(default_factory=list)  # subcommands chosen so far
    words: list[str] = field(default_factory=list)  # positional words typed at the current parser level
    flag_words: list[str] = field(default_factory=list)  # typed options with their values, as typed
    given: set[str] = field(default_factory=set)  # dests of the options typed
    pending: argparse.Action | None = None  # the option whose value is the word under the cursor
    lost: bool = False  # a word we cannot place (unknown subcommand): offer nothing


@dataclass
class Answer:
    candidates: list[str]
    directive: int = NO_FILE
    timed_out: bool = False


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `kubectl_complete-mtls`, and `kubectl-mtls __complete ...`."""
    words = list(sys.argv[1:] if argv is None else argv)
    try:
        answer = complete(words)
    except Exception:  # completion must never print a traceback into someone's prompt
        if os.environ.get("KUBECTL_MTLS_DEBUG"):
            raise
        answer = Answer([])
    write(answer, sys.stdout)
    if answer.timed_out:  # a lookup thread is still blocked on the network: do not wait for it
        sys.stdout.flush()
        os._exit(0)
    return 0


def write(answer: Answer, out: IO[str]) -> None:
    for candidate in answer.candidates:
        out.write(candidate + "\n")
    out.write(f":{answer.directive}\n")


def complete(words: Sequence[str]) -> Answer:
    from .parser import build_parser, command_word

    typed, current = (list(words[:-1]), words[-1]) if words else ([], "")
    # Only the command being typed is imported and registered: completion runs at every TAB.
    position = locate(build_parser("kubectl mtls", command_word(typed)), typed)
    if position.lost:
        return Answer([])
    if position.pending is not None:
        return values_of(position.pending, current, position)
    if current.startswith("-") and "=" in current:
        name, _, value = current.partition("=")
        action = option(position.parser, name)
        if action is None or not takes_value(action):
            return Answer([])
        answer = values_of(action, value, position)
        answer.candidates = [f"{name}={c}" for c in answer.candidates]
        return answer
    if current.startswith("-"):
        return Answer(flags(position, current))
    return positional(position, current)


# -- where the cursor is ---------------------------------------------------------------------------


def subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    action = parser._option_string_actions.get(word)
    if action is None and word.startswith("--"):  # argparse accepts unique prefixes of long options
        found = {a for s, a in parser._option_string_actions.items() if s.startswith(word)}
        action = found.pop() if len(found) == 1 else None
    return action


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def locate(parser: argparse.ArgumentParser, typed: Sequence[str]) -> Position:
    position = Position(parser)
    only_positionals = False
    index = 0
    while index < len(typed):
        word = typed[index]
        index += 1
        if word == "--" and not only_positionals:
            only_positionals = True
            continue
        if word.startswith("-") and len(word) > 1 and not only_positionals:
            name, eq, _ = word.partition("=")
            action = option(position.parser, name)
            attached = False
            if action is None and not word.startswith("--"):  # `-nshop`: a short option with its value
                action = position.parser._option_string_actions.get(word[:2])
                attached = action is not None and takes_value(action)
            if action is None:
                continue  # unknown flag: argparse will say so; keep completing what follows
            position.given.add(action.dest)
            if takes_value(action) and not eq and not attached:
                if index == len(typed):  # the word under the cursor is this option's value
                    position.pending = action
                else:
                    position.flag_words += [word, typed[index]]
                    index += 1
            else:
                position.flag_words.append(word)
            continue
        sub = subcommands(position.parser)
        if sub is not None and not position.words:
            chosen = sub.choices.get(word)
            if chosen is None:
                position.lost = True
                return position
            position.parser = chosen
            position.path.append(word)
            continue
        position.words.append(word)
    return position


# -- candidates --------------------------------------------------------------------------------------


def one_line(text: str | None, action: argparse.Action | None = None, prog: str = "") -> str:
    if not text or text == argparse.SUPPRESS:
        return ""
    if action is not None and "%(" in text:
        params = dict(vars(action), prog=prog)
        if params.get("choices") is not None:
            params["choices"] = ", ".join(str(c) for c in params["choices"])
        with contextlib.suppress(KeyError, TypeError, ValueError):
            text = text % params
    return " ".join(text.split())


def described(value: str, description: str) -> str:
    return f"{value}\t{description}" if description else value


def flags(position: Position, current: str) -> list[str]:
    out: list[str] = []
    repeatable = (argparse._AppendAction, argparse._CountAction, argparse._ExtendAction)
    for action in position.parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if action.dest in position.given and not isinstance(action, repeatable):
            continue
        description = one_line(action.help, action, position.parser.prog)
        for string in action.option_strings:
            if string.startswith(current):  # "-" offers short and long options, "--" long ones only
                out.append(described(string, description))
    return out


def positional(position: Position, current: str) -> Answer:
    sub = subcommands(position.parser)
    if sub is not None and not position.words:
        helps = {a.dest: one_line(a.help) for a in sub._choices_actions}
        names = [n for n in sub.choices if not n.startswith("_") and n.startswith(current)]
        return Answer([described(n, helps.get(n, "")) for n in names])
    action = nth_positional(position.parser, len(position.words))
    if action is None:
        return Answer([])
    if action.choices is not None:
        return Answer([str(c) for c in action.choices if str(c).startswith(current)])
    if action.dest == "check":  # explain CHECK
        return Answer(check_slugs(current))
    kind = kind_of(action, position)
    pair_destination = position.path[-1:] == ["check"] and position.words[:1] == ["pair"] and len(position.words) == 2
    if kind == "pod" and pair_destination:  # check pair SRC DST: DST may be a Service
        return lookup(lambda: services(position, current) + pods(position, current))
    if kind == "pod":
        return lookup(lambda: pods(position, current))
    if kind == "namespace":
        return lookup(lambda: namespaces(position, current))
    return Answer([])


def nth_positional(parser: argparse.ArgumentParser, n: int) -> argparse.Action | None:
    seen = 0
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.nargs in (None, "?"):
            width: float = 1
        elif isinstance(action.nargs, int):
            width = action.nargs
        else:  # "*", "+", REMAINDER
            width = float("inf")
        if n < seen + width:
            return action
        seen += int(width) if width != float("inf") else 0
    return None


def kind_of(action: argparse.Action, position: Position) -> str | None:
    """What a positional names: "pod", "namespace" or None. The word before it decides first
    (`check pod NAME`, `check namespace NAME`), then the argument's own name and help."""
    before = (position.words or position.path or [""])[-1]
    if before in POD_WORDS:
        return "pod"
    if before in NAMESPACE_WORDS:
        return "namespace"
    label = f"{action.dest} {action.metavar or ''}".lower()
    if action.dest in POD_DESTS or "pod" in label or "NAMESPACE/POD" in (action.help or ""):
        return "pod"
    if "namespace" in label:
        return "namespace"
    return None


def values_of(action: argparse.Action, current: str, position: Position) -> Answer:
    if action.choices is not None:
        return Answer([str(c) for c in action.choices if str(c).startswith(current)])
    dest = action.dest
    if dest == "ignore":  # --ignore CHECK[:NS/NAME]
        return Answer(check_slugs(current))
    if dest == "namespace" or dest.endswith("_namespace"):
        return lookup(lambda: namespaces(position, current))
    if dest in ("context", "cluster", "user"):
        return Answer(kubeconfig_names(position, dest + "s", current))
    if action.metavar == "DIR" or dest in ("snapshot", "dir"):
        return Answer([], FILTER_DIRS)
    if dest in ("kubeconfig", "istioctl") or action.metavar in ("PATH", "FILE"):
        return Answer([], DEFAULT)
    return Answer([])


# -- lookups -------------------------------------------------------------------------------------------


def lookup(fetch: Callable[[], list[str]]) -> Answer:
    """Run a lookup with a deadline; an error or a timeout gives no candidates."""
    result: list[list[str]] = []

    def run() -> None:
        try:
            result.append(fetch())
        except Exception:  # any failure means "nothing to offer"
            if os.environ.get("KUBECTL_MTLS_DEBUG"):
                import traceback

                traceback.print_exc()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(DEADLINE)
    if worker.is_alive():
        return Answer([], NO_FILE, timed_out=True)
    return Answer(sorted(result[0]) if result else [])


def source_args(position: Position) -> argparse.Namespace:
    """The typed source flags (--kubeconfig, --context, -n, --snapshot, ...) over their defaults."""
    from .commands.common import source_parent

    parser = _Quiet(add_help=False, parents=[source_parent()])
    args, _ = parser.parse_known_args(position.flag_words)
    for name in ("kubeconfig", "snapshot"):
        if getattr(args, name, None):
            setattr(args, name, os.path.expanduser(getattr(args, name)))
    timeout = getattr(args, "request_timeout", 0) or LOOKUP_TIMEOUT
    args.request_timeout = min(timeout, LOOKUP_TIMEOUT)
    return args


def _names(objects: list[dict[str, Any]]) -> list[str]:
    return [str(meta.get("name") or "") for meta in _metas(objects)]


def namespaces(position: Position, current: str) -> list[str]:
    from .commands.common import open_source
    from .errors import NotCapturedError

    source = open_source(source_args(position))
    try:
        names = _names(source.list_objects("namespaces", None))
    except NotCapturedError:
        names = []
    if not names:  # a hand-made snapshot without kubernetes/: the pods' namespaces
        names = [str(meta.get("namespace") or "") for meta in _metas(source.list_pods(None))]
    return sorted({n for n in names if n and n.startswith(current)})


def check_slugs(current: str) -> list[str]:
    from .checks.base import all_checks

    return [c.slug for c in all_checks() if c.slug.startswith(current)]


def services(position: Position, current: str) -> list[str]:
    """`svc/NAME` of the namespace's Services (check pair's destination)."""
    from .commands.common import open_source

    if current and not ("svc/".startswith(current) or current.startswith("svc/")):
        return []
    args = source_args(position)
    source = open_source(args)
    namespace = getattr(args, "namespace", None) or source.default_namespace()
    refs = [f"svc/{n}" for n in _names(source.list_objects("services", namespace))]
    return [ref for ref in refs if ref.startswith(current)]


def pods(position: Position, current: str) -> list[str]:
    """Pods (POD, NAMESPACE/POD) and the workloads that run them (deploy/NAME, sts/NAME, ds/NAME)."""
    from .commands.common import open_source
    from .commands.targets import SHORT, WORKLOAD_KINDS, workload_of

    args = source_args(position)
    source = open_source(args)
    kind_word, slash, prefix = current.partition("/")
    if slash and kind_word in WORKLOAD_KINDS:  # deploy/NAME in -n's namespace
        namespace = getattr(args, "namespace", None) or source.default_namespace()
        kind = WORKLOAD_KINDS[kind_word]
        names = {w[1] for p in source.list_pods(namespace) if (w := workload_of(p)) is not None and w[0] == kind}
        return [f"{kind_word}/{n}" for n in sorted(names) if n.startswith(prefix)]
    if "/" in current:  # NAMESPACE/POD
        namespace, _, prefix = current.partition("/")
        return [f"{namespace}/{n}" for n in _names(source.list_pods(namespace)) if n.startswith(prefix)]
    if "all_namespaces" in position.given:  # -A: every pod, as NAMESPACE/POD
        refs = [f"{meta.get('namespace')}/{meta.get('name')}" for meta in _metas(source.list_pods(None))]
        return [ref for ref in refs if ref.startswith(current)]
    namespace = getattr(args, "namespace", None) or source.default_namespace()
    listed = source.list_pods(namespace)
    workloads = {f"{SHORT[w[0]]}/{w[1]}" for p in listed if (w := workload_of(p)) is not None}
    return [n for n in [*_names(listed), *sorted(workloads)] if n and n.startswith(current)]


def _metas(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o.get("metadata") or {} for o in objects]


def kubeconfig_names(position: Position, section: str, current: str) -> list[str]:
    """Context, cluster or user names from the kubeconfig files (first file wins, as kubectl merges)."""
    import yaml

    try:
        args = source_args(position)
    except ValueError:
        return []
    paths = getattr(args, "kubeconfig", None) or os.environ.get("KUBECONFIG") or "~/.kube/config"
    names: list[str] = []
    for path in paths.split(os.pathsep):
        if not path:
            continue
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as handle:
                doc = yaml.safe_load(handle)
        except (OSError, yaml.YAMLError):
            continue
        entries = doc.get(section) if isinstance(doc, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            name = entry.get("name") if isinstance(entry, dict) else None
            if isinstance(name, str) and name.startswith(current) and name not in names:
                names.append(name)
    return sorted(names)


if __name__ == "__main__":
    sys.exit(main())
