"""Errors a user sees as one line, each tied to a documented exit code."""

from __future__ import annotations

# Exit codes (documented in the README; identical in every output format).
EXIT_OK = 0
EXIT_PROBLEM = 1  # the command ran and found a problem
EXIT_USAGE = 2  # bad arguments or unreadable input (malformed dump, broken snapshot)
EXIT_GATHER = 3  # could not gather: cluster or istioctl unreachable, forbidden, timed out
EXIT_DEPENDS = 4  # check pair: the answer depends on the request (or an ext-authz provider); see conditions


class MtlsError(Exception):
    """Base error: carries its exit code; str() is the one line shown to the user."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class UsageError(MtlsError):
    exit_code = EXIT_USAGE


class InputError(MtlsError):
    """Input exists but cannot be read: malformed dump, broken snapshot, unknown pod."""

    exit_code = EXIT_USAGE


class NotFoundError(InputError):
    """A named object (pod, snapshot entry) does not exist."""


class MissingFileError(InputError):
    """A file named on the command line (--kubeconfig) does not exist."""


class GatherError(MtlsError):
    """The cluster, the API or istioctl could not be reached or refused us."""

    exit_code = EXIT_GATHER


class NotCapturedError(GatherError):
    """The source never held this data (a snapshot without that file): not read, so not judged."""


# How to point at a cluster, as kubectl users know it: appended to every "no cluster" error.
POINT_AT_A_CLUSTER = "point at a cluster with --kubeconfig FILE, KUBECONFIG=FILE or --context NAME"


class NoClusterError(GatherError):
    """No cluster at all: no kubeconfig, or its API server cannot be reached. Nothing can be read, so
    every command stops with this one line instead of reporting each kind as unreadable."""

    def __init__(self, message: str) -> None:
        super().__init__(message if POINT_AT_A_CLUSTER in message else f"{message}; {POINT_AT_A_CLUSTER}")


def one_line(text: str, limit: int = 600) -> str:
    """Collapse multi-line tool output (istioctl stderr, API bodies) to one readable line."""
    parts = [p.strip() for p in text.replace("\r", "\n").split("\n")]
    line = " | ".join(p for p in parts if p)
    return line if len(line) <= limit else line[: limit - 3] + "..."
