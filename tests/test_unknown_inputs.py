"""Unknown is never a finding: what a snapshot or a dump does not hold is "not run", never an error,
a warning or a pass. Every snapshot shape the README allows, run through the CLI as a user would."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from test_trust_envoy import Made, leaf, root, secrets_dump, write_secrets_snapshot

STRICT_LISTENERS = [
    {
        "name": "virtualInbound",
        "address": {"socketAddress": {"address": "0.0.0.0", "portValue": 15006}},
        "filterChains": [
            {
                "name": "0.0.0.0_8080",
                "filterChainMatch": {"destinationPort": 8080, "transportProtocol": "tls"},
                "transportSocket": {
                    "name": "envoy.transport_sockets.tls",
                    "typedConfig": {
                        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                        "commonTlsContext": {
                            "tlsCertificateSdsSecretConfigs": [{"name": "default"}],
                            "combinedValidationContext": {"validationContextSdsSecretConfig": {"name": "ROOTCA"}},
                        },
                        "requireClientCertificate": True,
                    },
                },
                "filters": [{"name": "envoy.filters.network.tcp_proxy"}],
            }
        ],
        "trafficDirection": "INBOUND",
    }
]
PLAIN_CLUSTERS = [{"name": "outbound|8080||web.default.svc.cluster.local", "type": "EDS", "connectTimeout": "10s"}]


def split_snapshot(base: Path, with_secrets: bool = False) -> Path:
    """`istioctl proxy-config cluster|listener -o json` files only (the README's hand-made shape)."""
    folder = base / "proxies" / "default" / "web-0"
    folder.mkdir(parents=True)
    (folder / "listener.json").write_text(json.dumps(STRICT_LISTENERS))
    (folder / "cluster.json").write_text(json.dumps(PLAIN_CLUSTERS))
    if with_secrets:
        r = root("ec")
        (folder / "secret.json").write_text(json.dumps(secrets_dump([leaf(r, "ec")], [r])))
    return base


def check_json(snap: Path, *args: str) -> tuple[int, dict]:
    proc = run_cli("check", *args, "--snapshot", str(snap), "-o", "json")
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def statuses(data: dict) -> dict[str, str]:
    return {s["check"]: s["status"] for s in data["checks"]}


def test_split_dump_without_secrets_has_unknown_certificates_not_missing(tmp_path: Path) -> None:
    code, data = check_json(split_snapshot(tmp_path / "snap"), "-n", "default")
    assert code == 0, data
    assert data["findings"] == [] or all(f["severity"] == "info" for f in data["findings"]), data["findings"]
    status = statuses(data)
    for slug in ("cert-missing", "cert-expired", "cert-chain-untrusted", "root-mismatch"):
        assert status[slug] == "skipped", (slug, status[slug])
    whys = {i["what"]: i["why"] for i in data["incomplete"]}
    assert "could not read certificates (the dump has no secrets section" in whys["check cert-missing"]
    # no kubernetes/: PeerAuthentications were not read, so nothing is said about policy
    assert status["peerauthn-effective"] == "skipped"
    assert whys["check peerauthn-effective"] == "not run: could not read peerauthentications"
    assert "not read: the snapshot" in whys["peerauthentications"]
    assert "has no kubernetes/peerauthentications.json" in whys["peerauthentications"]


def test_secrets_only_dump_is_complete_for_certs(tmp_path: Path) -> None:
    r = root("ec")
    snap = write_secrets_snapshot(tmp_path / "snap", {"web-0": ([leaf(r, "ec")], [r])})
    proc = run_cli("certs", "-n", "default", "--snapshot", str(snap), "-o", "json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["incomplete"] == [] and len(data["items"]) == 2
    # `proxy` prints the whole model: there the missing sections are named.
    model = json.loads(run_cli("proxy", "web-0", "-n", "default", "--snapshot", str(snap), "-o", "json").stdout)
    assert "the dump has no clusters section: outbound TLS unknown" in model["incomplete"]


def test_certs_on_a_split_dump_says_certificates_are_unknown(tmp_path: Path) -> None:
    proc = run_cli("certs", "-n", "default", "--snapshot", str(split_snapshot(tmp_path / "snap")), "-o", "json")
    data = json.loads(proc.stdout)
    assert data["items"] == []
    assert [i["error"] for i in data["incomplete"]] == [
        "the dump has no secrets section: certificates and roots unknown"
    ]


def test_no_istiod_log_means_istiod_check_not_run(tmp_path: Path) -> None:
    snap = split_snapshot(tmp_path / "snap", with_secrets=True)
    (snap / "kubernetes").mkdir()
    pod = {"metadata": {"name": "web-0", "namespace": "default"}, "spec": {"containers": [{"name": "istio-proxy"}]}}
    (snap / "kubernetes" / "pods.json").write_text(json.dumps({"items": [pod]}))
    log = snap / "logs" / "default" / "web-0" / "istio-proxy.log"
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01T00:00:00.000000Z\tinfo\tEnvoy proxy is ready\n")
    code, data = check_json(snap, "pod", "web-0", "-n", "default")
    status = statuses(data)
    assert status["istiod-cert-errors"] == "skipped"
    assert status["proxy-tls-errors"] == "ok"
    why = {i["what"]: i["why"] for i in data["incomplete"]}["check istiod-cert-errors"]
    assert "no istiod pod" in why
    assert code == 0


def test_human_output_marks_unread_checks_with_a_question_mark(tmp_path: Path) -> None:
    proc = run_cli("check", "-n", "default", "--snapshot", str(split_snapshot(tmp_path / "snap")))
    assert proc.returncode == 0
    assert "? every sidecar holds a workload certificate and trusted roots [cert-missing]" in proc.stdout
    assert "× " not in proc.stdout and "‼ " not in proc.stdout
    assert "check(s) could not run" in proc.stdout


# -- check pair: a step whose input was not read is unknown (exit 3), naming the input -----------


def _istio_mutual_cluster(host: str, port: int, sa: str) -> dict:
    return {
        "name": f"outbound|{port}||{host}",
        "type": "EDS",
        "connectTimeout": "10s",
        "transportSocket": {
            "name": "envoy.transport_sockets.tls",
            "typedConfig": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "commonTlsContext": {
                    "tlsCertificateSdsSecretConfigs": [{"name": "default"}],
                    "combinedValidationContext": {
                        "defaultValidationContext": {
                            "matchSubjectAltNames": [{"exact": f"spiffe://cluster.local/ns/default/sa/{sa}"}]
                        },
                        "validationContextSdsSecretConfig": {"name": "ROOTCA"},
                    },
                    "alpnProtocols": ["istio"],
                },
                "sni": f"outbound_.{port}_._.{host}",
            },
        },
    }


def pair_snapshot(base: Path, *, server_secrets: bool = True, kinds: tuple[str, ...] = ()) -> Path:
    """client-0 calls svc/web (port 8080) in ISTIO_MUTUAL; web-0 is STRICT. Files split as istioctl
    prints them; `kinds` leaves those kubernetes/<kind>.json files out."""
    from harness.pki import make_root, make_workload

    mesh_root = make_root()
    for pod, sa in (("client-0", "client"), ("web-0", "web")):
        folder = base / "proxies" / "default" / pod
        folder.mkdir(parents=True)
        (folder / "listener.json").write_text(json.dumps(STRICT_LISTENERS))
        clusters = [_istio_mutual_cluster("web.default.svc.cluster.local", 8080, "web")] if pod == "client-0" else []
        (folder / "cluster.json").write_text(json.dumps(clusters))
        if pod == "client-0" or server_secrets:
            issued = make_workload(mesh_root, "default", sa)
            dump = secrets_dump([Made(issued.cert, issued.key)], [Made(mesh_root.cert, mesh_root.key)])
            (folder / "secret.json").write_text(json.dumps(dump))
    pods = [
        {
            "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
            "spec": {
                "serviceAccountName": app,
                "containers": [{"name": "app", "ports": [{"containerPort": 8080}]}, {"name": "istio-proxy"}],
            },
            "status": {"phase": "Running", "podIP": ip},
        }
        for name, app, ip in (("client-0", "client", "10.0.0.1"), ("web-0", "web", "10.0.0.2"))
    ]
    objects = {
        "pods": pods,
        "namespaces": [{"metadata": {"name": "default", "labels": {"istio-injection": "enabled"}}}],
        "services": [
            {
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"selector": {"app": "web"}, "ports": [{"name": "tcp", "port": 8080, "targetPort": 8080}]},
            }
        ],
        "serviceaccounts": [],
        "peerauthentications": [
            {"metadata": {"name": "default", "namespace": "default"}, "spec": {"mtls": {"mode": "STRICT"}}}
        ],
        "destinationrules": [],
        "authorizationpolicies": [],
        "configmaps": [],
        "secrets": [],
    }
    (base / "kubernetes").mkdir()
    for kind, items in objects.items():
        if kind not in kinds:
            (base / "kubernetes" / f"{kind}.json").write_text(json.dumps({"items": items}))
    return base


def pair_json(snap: Path) -> tuple[int, dict]:
    proc = run_cli("check", "pair", "client-0", "svc/web", "-n", "default", "--snapshot", str(snap), "-o", "json")
    assert "Traceback" not in proc.stderr and proc.stderr.strip() == "", proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_pair_with_everything_read_is_ok(tmp_path: Path) -> None:
    code, data = pair_json(pair_snapshot(tmp_path / "snap"))
    assert (code, data["verdict"]) == (0, "ok"), data["steps"]


def test_pair_without_the_servers_certificates_is_unknown(tmp_path: Path) -> None:
    code, data = pair_json(pair_snapshot(tmp_path / "snap", server_secrets=False))
    assert (code, data["verdict"], data["first_failure"]) == (3, "unknown", "identity"), data["steps"]
    last = data["steps"][-1]
    assert last["ok"] is None and "default/web-0: the dump has no secrets section" in last["detail"]


def test_pair_without_authorization_policies_is_unknown(tmp_path: Path) -> None:
    code, data = pair_json(pair_snapshot(tmp_path / "snap", kinds=("authorizationpolicies",)))
    assert (code, data["verdict"], data["first_failure"]) == (3, "unknown", "authz"), data["steps"]
    assert "authorizationpolicies not read" in data["steps"][-1]["detail"]


def test_pair_without_peerauthentications_judges_by_what_the_sidecar_enforces(tmp_path: Path) -> None:
    code, data = pair_json(pair_snapshot(tmp_path / "snap", kinds=("peerauthentications",)))
    server = next(s for s in data["steps"] if s["step"] == "server-mode")
    assert server["ok"] is True, data["steps"]
    assert code == 0


def test_pair_to_a_service_when_services_were_not_read(tmp_path: Path) -> None:
    snap = pair_snapshot(tmp_path / "snap", kinds=("services",))
    proc = run_cli("check", "pair", "client-0", "svc/web", "-n", "default", "--snapshot", str(snap))
    assert proc.returncode == 3 and "services not read" in proc.stderr
    proc = run_cli("check", "pair", "client-0", "web-0", "-n", "default", "--snapshot", str(snap), "-o", "json")
    data = json.loads(proc.stdout)
    assert (proc.returncode, data["first_failure"]) == (3, "client-tls"), data["steps"]


def test_a_kind_listed_only_in_part_when_the_snapshot_was_taken_is_not_read(tmp_path: Path) -> None:
    """`snapshot` records a forbidden listing in snapshot.json; the replay must not take the rest as all."""
    snap = pair_snapshot(tmp_path / "snap")
    manifest = {
        "format": "kubectl-mtls-snapshot",
        "version": 1,
        "incomplete": [
            {
                "kind": "peerauthentications",
                "namespace": "istio-system",
                "error": 'peerauthentications.security.istio.io is forbidden: User "me" cannot list resource',
            }
        ],
    }
    (snap / "snapshot.json").write_text(json.dumps(manifest))
    _, data = check_json(snap, "-n", "default")
    status = statuses(data)
    assert status["peerauthn-effective"] == status["proxy-policy-drift"] == "skipped", data["incomplete"]
    whys = {i["what"]: i["why"] for i in data["incomplete"]}
    assert "not read when the snapshot was taken" in whys["peerauthentications"]
    assert not [f for f in data["findings"] if f["check"].startswith("peerauthn")]


def _shape(base: Path, shape: str) -> Path:
    import shutil

    snap = pair_snapshot(base)
    if shape == "no kubernetes/":
        shutil.rmtree(snap / "kubernetes")
    elif shape == "pods only":
        for path in (snap / "kubernetes").iterdir():
            if path.name != "pods.json":
                path.unlink()
    elif shape == "split dumps, no secrets":
        for path in snap.glob("proxies/*/*/secret.json"):
            path.unlink()
    elif shape == "secrets only":
        for path in [*snap.glob("proxies/*/*/cluster.json"), *snap.glob("proxies/*/*/listener.json")]:
            path.unlink()
    return snap


@pytest.mark.parametrize("shape", ["full", "no kubernetes/", "pods only", "split dumps, no secrets", "secrets only"])
def test_a_healthy_mesh_in_every_snapshot_shape_raises_nothing(tmp_path: Path, shape: str) -> None:
    """Whatever part of a healthy mesh a snapshot holds, no command turns the missing part into a problem."""
    snap = _shape(tmp_path / "snap", shape)
    code, data = check_json(snap, "-A")
    assert [f for f in data["findings"] if f["severity"] != "info"] == [], (shape, data["findings"])
    assert code == 0
    proc = run_cli("certs", "-A", "--snapshot", str(snap), "-o", "json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    proc = run_cli("check", "pair", "client-0", "default/web-0", "--snapshot", str(snap), "-o", "json")
    assert "Traceback" not in proc.stderr
    verdict = json.loads(proc.stdout)["verdict"] if proc.stdout.strip() else "error"
    assert verdict in ("ok", "unknown") and proc.returncode in (0, 3), (shape, proc.stdout, proc.stderr)
    proc = run_cli("rootdiff", "client-0", "web-0", "-n", "default", "--snapshot", str(snap), "-o", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    expected = 3 if shape == "split dumps, no secrets" else 0  # certificates not read: unknown, not a mismatch
    assert proc.returncode == expected, (shape, proc.stdout, proc.stderr)
    proc = run_cli("strict-ready", "-n", "default", "--snapshot", str(snap), "-o", "json")
    assert "Traceback" not in proc.stderr, proc.stderr
    ready = json.loads(proc.stdout)
    assert [f for f in ready["findings"] if f["severity"] != "info"] == [], (shape, ready["findings"])
    # Everything is STRICT already where PeerAuthentications were read: nothing to switch. Where they
    # were not, every workload is looked at, and without traffic stats who sends plaintext is unknown.
    policies_read = shape not in ("no kubernetes/", "pods only")
    assert (ready["verdict"], proc.returncode) == (("ready", 0) if policies_read else ("unknown", 3)), (shape, ready)


def test_pair_incomplete_lists_only_what_the_call_needed(tmp_path: Path) -> None:
    snap = pair_snapshot(tmp_path / "snap")
    other = snap / "proxies" / "default" / "other-0"
    other.mkdir(parents=True)
    (other / "listener.json").write_text(json.dumps(STRICT_LISTENERS))  # no clusters, no secrets
    pods = json.loads((snap / "kubernetes" / "pods.json").read_text())
    pods["items"].append(
        {
            "metadata": {"name": "other-0", "namespace": "default", "labels": {"app": "other"}},
            "spec": {"serviceAccountName": "other", "containers": [{"name": "istio-proxy"}]},
            "status": {"phase": "Running"},
        }
    )
    (snap / "kubernetes" / "pods.json").write_text(json.dumps(pods))
    code, data = pair_json(snap)
    assert (code, data["verdict"]) == (0, "ok"), data["steps"]
    assert not [i for i in data["incomplete"] if "other-0" in i["what"]], data["incomplete"]
