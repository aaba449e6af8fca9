"""Mutation fuzzing of snapshot input, run through the real CLI entry point.

:class:`Mutator` (seeded, reproducible) copies a base snapshot and damages it the way broken input
arrives in real life: truncated files, a value of the wrong JSON type, a deleted key, odd certificates
(dates before 1950 or in year 9999, negative serials, a damaged PEM block), planted private keys in
several encodings, and layout faults (a directory, a FIFO, a socket, a dangling or looping link, a link
to a file outside the snapshot, /dev/zero, an over-long name).

:func:`worker` runs in a separate process and executes many cases with ``kubectl_mtls.cli.main`` so the
imports are paid once; it records what the CLI printed, its exit code, the warnings it raised and every
file or directory opened outside the snapshot (through an audit hook). The parent watches each case
with a timeout, so a hang is a finding, not a stuck test (see tests/test_fuzz_inputs.py).
"""

from __future__ import annotations

import base64
import copy
import datetime as _dt
import io
import json
import os
import random
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.oddcerts import odd_certificate, spki

UTC = _dt.UTC

# Values a mutation puts where something else belongs.
ODD_VALUES: list[Any] = [
    None,
    "",
    "x",
    0,
    -1,
    2**64,
    -(2**63) - 1,
    1.5,
    True,
    [],
    {},
    [None],
    ["x"],
    {"x": None},
    [[[]]],
    "\ud800",  # a lone surrogate: orjson refuses to encode it, json writes it escaped
    "\u00b2",  # a superscript two: str.isdigit() says yes, int() refuses it
]


@dataclass
class Case:
    """One fuzz case: a damaged snapshot directory and the command to run on it."""

    number: int
    directory: Path
    argv: list[str]
    mutations: list[str] = field(default_factory=list)
    planted_keys: list[bytes] = field(default_factory=list)  # substrings that must never be printed

    def describe(self) -> str:
        return f"case {self.number}: {' '.join(self.argv)} after {'; '.join(self.mutations)}"


def _walk(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) inside a JSON document."""
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _walk(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _walk(value, (*path, index))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


class Mutator:
    def __init__(self, base: Path, outside: Path, seed: int) -> None:
        self.base = base
        self.outside = outside  # a directory beside the snapshots holding a "secret" file
        self.random = random.Random(seed)
        self.keys = [_key_forms(k) for k in _private_keys()]

    # -- building cases -----------------------------------------------------------------------
    def case(self, number: int, directory: Path, commands: list[list[str]]) -> Case:
        shutil.copytree(self.base, directory, symlinks=True)
        argv = [*self.random.choice(commands), "--snapshot", str(directory)]
        case = Case(number, directory, argv)
        for _ in range(self.random.choice((1, 1, 1, 2, 3))):
            mutation = self.random.choice(
                (
                    self.type_swap,
                    self.type_swap,
                    self.type_swap,
                    self.delete_key,
                    self.delete_key,
                    self.truncate,
                    self.odd_certificate,
                    self.damaged_pem,
                    self.plant_key,
                    self.layout_fault,
                )
            )
            case.mutations.append(mutation(case))
        return case

    def dump_case(self, number: int, directory: Path) -> Case:
        """A case for the live path: only the sidecar dumps are damaged (they are what istioctl prints)."""
        shutil.copytree(self.base, directory, symlinks=True)
        case = Case(number, directory, ["snapshot"])
        for _ in range(self.random.choice((1, 2))):
            mutation = self.random.choice(
                (self.plant_key, self.plant_key, self.type_swap, self.delete_key, self.truncate, self.odd_certificate)
            )
            case.mutations.append(mutation(case, "proxies"))
        return case

    def _json_files(self, case: Case, under: str = "") -> list[Path]:
        root = case.directory / under if under else case.directory
        return sorted(p for p in root.rglob("*.json") if p.is_file() and not p.is_symlink() and p.stat().st_size)

    def _load(self, path: Path) -> Any:
        try:
            return json.loads(path.read_bytes())
        except ValueError:
            return None

    def _store(self, path: Path, doc: Any) -> None:
        path.write_text(json.dumps(doc))

    def _pick_file(self, case: Case, under: str = "") -> tuple[Path, Any]:
        files = self._json_files(case, under)
        for _ in range(5):
            path = self.random.choice(files)
            doc = self._load(path)
            if doc is not None:
                return path, doc
        return path, None

    def _rel(self, case: Case, path: Path) -> str:
        return str(path.relative_to(case.directory))

    def type_swap(self, case: Case, under: str = "") -> str:
        path, doc = self._pick_file(case, under)
        if doc is None:
            return "type swap skipped"
        where = self.random.choice(_walk(doc)[1:] or [()])
        value = copy.deepcopy(self.random.choice(ODD_VALUES))
        if not where:
            doc = value
        else:
            _get(doc, where[:-1])[where[-1]] = value
        self._store(path, doc)
        return f"{self._rel(case, path)}: {'.'.join(map(str, where))} = {value!r}"

    def delete_key(self, case: Case, under: str = "") -> str:
        path, doc = self._pick_file(case, under)
        keyed = [p for p in _walk(doc)[1:] if isinstance(_get(doc, p[:-1]), dict)]
        if not keyed:
            return "delete skipped"
        where = self.random.choice(keyed)
        del _get(doc, where[:-1])[where[-1]]
        self._store(path, doc)
        return f"{self._rel(case, path)}: deleted {'.'.join(map(str, where))}"

    def truncate(self, case: Case, under: str = "") -> str:
        path = self.random.choice(self._json_files(case, under))
        data = path.read_bytes()
        cut = self.random.randrange(len(data))
        path.write_bytes(data[:cut])
        return f"{self._rel(case, path)}: truncated at byte {cut}"

    def _secret_values(self, case: Case) -> list[tuple[Path, Any, tuple[Any, ...]]]:
        """(file, document, path) of every inline certificate in the dumps."""
        out = []
        for path in self._json_files(case):
            if "proxies" not in path.parts:
                continue
            doc = self._load(path)
            for where in _walk(doc):
                if where and where[-1] in ("inline_bytes", "inlineBytes") and isinstance(_get(doc, where), str):
                    value = base64.b64decode(_get(doc, where) + "==")
                    if b"CERTIFICATE" in value:
                        out.append((path, doc, where))
        return out

    def odd_certificate(self, case: Case, under: str = "") -> str:
        targets = self._secret_values(case)
        if not targets:
            return "odd certificate skipped"
        path, doc, where = self.random.choice(targets)
        choice = self.random.choice(("year1", "year9999", "negative", "zero", "inverted", "off-curve", "gost"))
        kwargs: dict[str, Any] = {
            "year1": {"not_before": _dt.datetime(1, 1, 1, tzinfo=UTC)},
            "year9999": {"not_after": _dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)},
            "negative": {"serial": -self.random.randrange(1, 2**64)},
            "zero": {"serial": 0},
            "inverted": {
                "not_before": _dt.datetime(2040, 1, 1, tzinfo=UTC),
                "not_after": _dt.datetime(1949, 1, 1, tzinfo=UTC),
            },
            # public keys cryptography cannot load: an EC point off P-256, an algorithm it lacks (GOST)
            "off-curve": {"public_key_info": spki("1.2.840.10045.2.1", b"\x04" + b"\x01" * 64, "1.2.840.10045.3.1.7")},
            "gost": {"public_key_info": spki("1.2.643.7.1.1.1.1", b"\x04\x40" + b"\x02" * 64)},
        }[choice]
        pem, _key = odd_certificate(**kwargs)
        old = base64.b64decode(_get(doc, where))
        _get(doc, where[:-1])[where[-1]] = base64.b64encode(pem + old).decode()
        self._store(path, doc)
        return f"{self._rel(case, path)}: {choice} certificate prepended at {'.'.join(map(str, where))}"

    def damaged_pem(self, case: Case) -> str:
        targets = self._secret_values(case)
        if not targets:
            return "damaged PEM skipped"
        path, doc, where = self.random.choice(targets)
        pem = base64.b64decode(_get(doc, where)).decode(errors="replace")
        lines = pem.splitlines()
        body = [i for i, line in enumerate(lines) if line and not line.startswith("-----")]
        index = self.random.choice(body)
        lines[index] = lines[index][: len(lines[index]) // 2] + "!!" + lines[index][len(lines[index]) // 2 + 2 :]
        _get(doc, where[:-1])[where[-1]] = base64.b64encode(("\n".join(lines) + "\n").encode()).decode()
        self._store(path, doc)
        return f"{self._rel(case, path)}: damaged line {index} of the PEM at {'.'.join(map(str, where))}"

    def plant_key(self, case: Case, under: str = "") -> str:
        """A private key in a place a diagnosis may print (a SAN-bearing field, an annotation, a
        secret): it must never reach the output."""
        path, doc = self._pick_file(case, under)
        if not isinstance(doc, (dict, list)):
            return "plant skipped"
        forms, needles = self.random.choice(self.keys)
        form_name, value = self.random.choice(list(forms.items()))
        containers = [p for p in _walk(doc) if isinstance(_get(doc, p), dict)]
        where = self.random.choice(containers)
        name = self.random.choice(("private_key", "annotation", "name", "inline_string", "secret"))
        _get(doc, where)[name] = (
            {"inline_string": value} if name == "private_key" and self.random.random() < 0.5 else value
        )
        self._store(path, doc)
        case.planted_keys += needles
        return f"{self._rel(case, path)}: {form_name} key planted at {'.'.join(map(str, (*where, name)))}"

    def layout_fault(self, case: Case) -> str:
        files = [p for p in case.directory.rglob("*") if p.is_file()]
        path = self.random.choice(files)
        fault = self.random.choice(
            ("directory", "fifo", "socket", "dangling", "loop", "outside", "zero", "empty", "longname")
        )
        if fault == "longname":
            target = path.parent / ("x" * 250 + ".json")
            path.rename(target) if len(target.name) < 256 else None
            return f"{self._rel(case, path)}: moved to a 250-character name"
        path.unlink()
        if fault == "directory":
            path.mkdir()
        elif fault == "fifo":
            os.mkfifo(path)
        elif fault == "socket":
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.bind(str(path))
            except OSError:  # a socket path longer than sun_path allows
                path.write_bytes(b"")
                fault = "empty (socket path too long)"
            finally:
                sock.close()
        elif fault == "dangling":
            path.symlink_to(path.parent / "does-not-exist")
        elif fault == "loop":
            path.symlink_to(path)
        elif fault == "outside":
            path.symlink_to(self.outside / "secret.json")
        elif fault == "zero":
            path.symlink_to("/dev/zero")
        else:
            path.write_bytes(b"")
        return f"{self._rel(case, path)}: {fault}"


def _private_keys() -> list[Any]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    return [ec.generate_private_key(ec.SECP256R1()), rsa.generate_private_key(65537, 1024)]


def _key_forms(key: Any) -> tuple[dict[str, str], list[bytes]]:
    """A key in the encodings a leak takes, and substrings that would show it was printed."""
    from cryptography.hazmat.primitives import serialization as ser

    pkcs8_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    legacy_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    pkcs8_der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    legacy_der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    forms = {
        "PEM (PKCS#8)": pkcs8_pem.decode(),
        "PEM (PKCS#1/SEC1)": legacy_pem.decode(),
        "base64 of PEM": base64.b64encode(pkcs8_pem).decode(),
        "base64 of DER (PKCS#8)": base64.b64encode(pkcs8_der).decode(),
        "base64 of DER (PKCS#1/SEC1)": base64.b64encode(legacy_der).decode(),
    }
    needles = [
        pkcs8_pem.splitlines()[1][:40],
        legacy_pem.splitlines()[1][:40],
        base64.b64encode(pkcs8_pem)[20:60],
        base64.b64encode(legacy_der)[20:60],
    ]
    return forms, needles


# -- running cases ----------------------------------------------------------------------------------
@dataclass
class Outcome:
    code: int | None  # None: the case hung and the worker was killed
    stdout: str
    stderr: str
    outside: list[str]


class Runner:
    """One long-lived worker process running cases through kubectl_mtls.cli.main; restarted after a hang."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.process: Any = None

    def _start(self) -> None:
        import subprocess

        env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        env.pop("KUBECTL_MTLS_DEBUG", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "harness.fuzz"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )

    def run(self, argv: list[str], root: Path | None, env: dict[str, str] | None = None) -> Outcome:
        """Run argv; `root` is the snapshot (reads outside it are recorded; None: not watched)."""
        import select

        if self.process is None or self.process.poll() is not None:
            self._start()
        request = {"argv": argv, "root": str(root) if root else None, "env": env or {}}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], self.timeout)
        line = self.process.stdout.readline() if ready else ""
        if not line:
            self.close()
            return Outcome(None, "", f"no answer within {self.timeout}s (hang or crash of the worker)", [])
        answer = json.loads(line)
        return Outcome(answer["code"], answer["stdout"], answer["stderr"], answer["outside"])

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
                stream.close()
            self.process = None


def problems(case: Case, outcome: Outcome) -> list[str]:
    """What is wrong with how the CLI handled a case (empty: handled well)."""
    found = []
    if outcome.code is None:
        found.append(outcome.stderr)
    if "Traceback" in outcome.stderr or "internal error" in outcome.stderr:
        found.append(f"internal error: {outcome.stderr.strip()[-600:]}")
    stderr_lines = [line for line in outcome.stderr.splitlines() if line.strip()]
    if outcome.code not in (None, 0, 1, 2, 3):
        found.append(f"exit code {outcome.code}")
    reported = outcome.code == 3 and not stderr_lines and outcome.stdout.strip()  # check pair: unknown
    one_line = len(stderr_lines) == 1 and stderr_lines[0].startswith("error: ")
    if outcome.code in (2, 3) and not reported and not one_line:
        found.append(f"exit {outcome.code} without a one-line error: {outcome.stderr.strip()[-400:]!r}")
    if outcome.code in (0, 1) and stderr_lines:
        found.append(f"stderr on success: {outcome.stderr.strip()[-400:]!r}")
    for needle in case.planted_keys:
        if needle.decode() in outcome.stdout or needle.decode() in outcome.stderr:
            found.append("planted private key material printed")
    if outcome.outside:
        found.append(f"read outside the snapshot: {sorted(set(outcome.outside))[:3]}")
    return found


def leaks(directory: Path, needles: list[bytes]) -> list[str]:
    """Files under `directory` holding one of the planted keys' substrings (raw or JSON-unescaped)."""
    found = []
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            unescaped = data.replace(b"\\/", b"/").replace(b"\\n", b"\n")
            if any(n in data or n in unescaped for n in needles):
                found.append(f"planted private key written to {path.relative_to(directory)}")
    return found


# -- the worker process ----------------------------------------------------------------------------
def worker() -> None:
    """Read cases (JSON lines: argv, root) on stdin; answer one JSON line per case on stdout."""
    import warnings

    from kubectl_mtls.cli import main

    channel = sys.stdout
    allowed = [os.path.realpath(p) for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, *sys.path} if p]
    state: dict[str, Any] = {"root": None, "outside": [], "busy": False}

    def audit(event: str, args: tuple[Any, ...]) -> None:
        if state["root"] is None or state["busy"] or event not in ("open", "os.listdir", "os.scandir"):
            return
        target = args[0] if args else None
        if not isinstance(target, (str, bytes, os.PathLike)):
            return
        state["busy"] = True  # realpath may itself raise audit events
        try:
            real = os.path.realpath(os.fsdecode(target))
        finally:
            state["busy"] = False
        inside = [state["root"], *allowed, "/dev/null", "/dev/urandom"]
        if not any(real == base or real.startswith(base.rstrip("/") + "/") for base in inside):
            state["outside"].append(real)

    sys.addaudithook(audit)
    warnings.simplefilter("always")  # a warning in case 40 must show even if case 3 raised it already
    for line in sys.stdin:
        request = json.loads(line)
        saved_env = {key: os.environ.get(key) for key in request["env"]}
        os.environ.update(request["env"])
        state["root"] = os.path.realpath(request["root"]) if request["root"] else None
        state["outside"] = []
        out, err = io.StringIO(), io.StringIO()
        sys.stdout, sys.stderr = out, err
        try:
            code = main(request["argv"])
        except SystemExit as exc:  # argparse
            code = exc.code if isinstance(exc.code, int) else 2
        except BaseException as exc:  # cli.main lets nothing else out: if it does, that is a finding
            import traceback

            err.write("Traceback (escaped cli.main):\n" + "".join(traceback.format_exception(exc)))
            code = -1
        finally:
            sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
            state["root"] = None
            for key, value in saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        channel.write(
            json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "outside": state["outside"]})
            + "\n"
        )
        channel.flush()


if __name__ == "__main__":
    worker()
