"""The Helm chart, rendered by Helm's own engine (helm-python-sdk) and checked offline.

Every rendered manifest is validated against the Kubernetes 1.30 OpenAPI schemas in
strict mode (unknown fields fail); no cluster, no helm binary.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from services.store.engines import normalize_database_url

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "cronwork"
SCHEDULES_FILE = ROOT / "schedules.yaml"
KUBE_VERSION = "1.30"
RELEASE = "cw"
NAMESPACE = "jobs"
FULLNAME = f"{RELEASE}-cronwork"

#: Kinds from CRDs: kubernetes-validate ships only built-in schemas.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

#: The two values the chart requires when no existingSecret is given.
BASE: dict[str, Any] = {
    "secrets": {
        "databaseUrl": "postgresql+psycopg2://cronwork:pw@db:5432/cronwork",
        "redisUrl": "redis://:pw@redis:6379/0",
    }
}

#: Used when the repository has no schedules.yaml yet.
FALLBACK_SCHEDULES = """\
imports: [actors.reports]
schedules:
  nightly-report:
    actor: nightly_report
    cron: "30 2 * * *"
    timezone: Europe/Berlin
"""


def values(**overrides: Any) -> dict[str, Any]:
    """BASE deep-merged with ``overrides`` (nested dicts merge, other values replace)."""

    def merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into

    return merge(copy.deepcopy(BASE), overrides)


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


def render(chart: Any, vals: dict[str, Any]) -> list[dict[str, Any]]:
    """Render and parse every manifest (NOTES.txt and empty documents skipped)."""
    out = chart.render(vals, name=RELEASE, namespace=NAMESPACE)
    objs: list[dict[str, Any]] = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("metadata", {})
                objs.append(doc)
    return objs


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def one(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = by_kind(objs, kind)
    assert name in found, f"no {kind} {name}; have {sorted(found)}"
    return found[name]


def deployments(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    deps = by_kind(objs, "Deployment")
    assert set(deps) == {f"{FULLNAME}-scheduler", f"{FULLNAME}-worker"}
    return {name.rsplit("-", 1)[1]: dep for name, dep in deps.items()}


def pod_specs(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod specs of every workload (Deployments and Jobs)."""
    specs = {}
    for obj in objs:
        if obj["kind"] in ("Deployment", "Job"):
            specs[f"{obj['kind']}/{obj['metadata']['name']}"] = obj["spec"]["template"]["spec"]
    return specs


def hook_events(obj: dict[str, Any]) -> set[str]:
    raw = obj["metadata"].get("annotations", {}).get("helm.sh/hook", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def hook_weight(obj: dict[str, Any]) -> int:
    return int(obj["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))


# --------------------------------------------------------------------------------- lint


def test_lint_passes_with_defaults_and_with_values() -> None:
    for vals in (None, values()):
        report = helm.lint(
            CHART, vals, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}.0"
        )
        assert report["total_charts_linted"] == 1
        assert report["errors"] == [], report
        # Severity 3 is an error; info (1) such as "icon is recommended" is fine.
        assert not [m for m in report["messages"] if m["severity"] >= 3], report


def test_schema_rejects_bad_values(chart: Any) -> None:
    bad = values(scheduler={"replicas": "two"})
    with pytest.raises(helm.HelmValuesError, match=r"/scheduler/replicas"):
        chart.validate_schema(bad)
    # Rendering (what install/upgrade/template do) refuses the same values.
    with pytest.raises(helm.HelmValuesError, match=r"/scheduler/replicas"):
        chart.render(bad, name=RELEASE, namespace=NAMESPACE)
    # Lint reports it as data, not as an exception.
    report = helm.lint(CHART, bad)
    assert any("/scheduler/replicas" in err for err in report["errors"]), report
    # Unknown keys (typos) and bad enums are refused too.
    for typo in (values(worker={"proceses": 4}), values(config={"logFormat": "xml"})):
        with pytest.raises(helm.HelmValuesError):
            chart.validate_schema(typo)
    chart.validate_schema(values())


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg2"])
def test_database_url_as_providers_hand_it_out(chart: Any, scheme: str) -> None:
    url = f"{scheme}://cronwork:pw@db.example.com:5432/cronwork?sslmode=require"
    vals = values(secrets={"databaseUrl": url})
    report = helm.lint(CHART, vals, strict=True, namespace=NAMESPACE)
    assert report["errors"] == [], report
    secret = one(render(chart, vals), "Secret", FULLNAME)
    # Passed on as given: cronwork itself reads every one of these forms as psycopg2.
    assert base64.b64decode(secret["data"]["CRONWORK_DATABASE_URL"]).decode() == url
    assert normalize_database_url(url).startswith("postgresql+psycopg2://")


@pytest.mark.parametrize(
    "url",
    [
        "postgres+psycopg2://cronwork:pw@db/cronwork",  # SQLAlchemy knows no "postgres" dialect
        "postgresql+asyncpg://cronwork:pw@db/cronwork",  # a driver the image does not ship
        "mysql://cronwork:pw@db/cronwork",
    ],
)
def test_database_urls_cronwork_cannot_use_are_refused(chart: Any, url: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=r"/secrets/databaseUrl"):
        chart.validate_schema(values(secrets={"databaseUrl": url}))


def test_missing_connection_urls_fail_with_a_clear_message(chart: Any) -> None:
    with pytest.raises(helm.HelmRenderError, match=r"secrets\.databaseUrl is required"):
        chart.render({}, name=RELEASE, namespace=NAMESPACE)


# ------------------------------------------------------------------ kubernetes validity


def schedules_text() -> str:
    # The repository's real schedules file once it exists; a small inline one before.
    return SCHEDULES_FILE.read_text() if SCHEDULES_FILE.exists() else FALLBACK_SCHEDULES


VALIDATION_CASES = {
    "defaults": values(),
    "repo-schedules": values(schedules=schedules_text()),
    "everything-on": values(
        schedules=schedules_text(),
        image={"repository": "registry.example.com/cronwork", "tag": "1.2.3"},
        imagePullSecrets=[{"name": "regcred"}],
        secrets={"sentryDsn": "https://k@sentry.example.com/1", "slackWebhookUrl": "https://x"},
        config={"sentryEnvironment": "prod"},
        extraEnv=[{"name": "TZ", "value": "UTC"}],
        extraEnvFrom=[{"configMapRef": {"name": "more-env"}}],
        metrics={"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
        scheduler={
            "podAntiAffinityPreset": "hard",
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "topology.kubernetes.io/zone",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "scheduler"}},
                }
            ],
            "priorityClassName": "high",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        },
        worker={
            "queues": ["default", "reports"],
            "livenessProbe": {"type": "exec"},
            "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
        },
    ),
    "existing-secret-no-sa": values(
        existingSecret="cw-secrets", serviceAccount={"create": False, "name": "cw"}
    ),
    "no-migration-no-service": values(migration={"enabled": False}, service={"enabled": False}),
    "dashboard-web-and-ingress": values(
        secrets={"dashboardToken": "admin-token", "dashboardReadonlyToken": "read-token"},
        dashboard={
            "web": {"enabled": True, "replicas": 2},
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "host": "cronwork.example.com",
                "annotations": {"cert-manager.io/cluster-issuer": "letsencrypt"},
                "tls": [{"hosts": ["cronwork.example.com"], "secretName": "cronwork-tls"}],
            },
        },
    ),
}


@pytest.mark.parametrize("case", sorted(VALIDATION_CASES))
def test_every_manifest_is_valid_kubernetes(chart: Any, case: str) -> None:
    objs = render(chart, VALIDATION_CASES[case])
    assert objs
    validated = 0
    for obj in objs:
        if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {err.message}")
        validated += 1
        # Labels the chart promises on everything.
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "cronwork"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
    assert validated >= 6


def test_schedules_from_the_repo_land_in_the_configmap(chart: Any) -> None:
    text = schedules_text()
    objs = render(chart, values(schedules=text))
    cm = one(objs, "ConfigMap", f"{FULLNAME}-schedules")
    assert cm["data"]["schedules.yaml"].strip() == text.strip()
    assert yaml.safe_load(cm["data"]["schedules.yaml"]) == yaml.safe_load(text)
    # The chart's default is valid YAML as well.
    default = one(render(chart, values()), "ConfigMap", f"{FULLNAME}-schedules")
    assert yaml.safe_load(default["data"]["schedules.yaml"])


# ----------------------------------------------------------------------- the components


def test_scheduler_replicas_and_pdb(chart: Any) -> None:
    objs = render(chart, values())
    assert deployments(objs)["scheduler"]["spec"]["replicas"] == 2
    pdb = one(objs, "PodDisruptionBudget", f"{FULLNAME}-scheduler")
    assert pdb["spec"]["maxUnavailable"] == 1
    sched_selector = deployments(objs)["scheduler"]["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == sched_selector
    assert sched_selector["app.kubernetes.io/component"] == "scheduler"
    # Spread across nodes by default.
    affinity = deployments(objs)["scheduler"]["spec"]["template"]["spec"]["affinity"]
    preferred = affinity["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert preferred[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == sched_selector


def test_worker_args_from_values(chart: Any) -> None:
    objs = render(chart, values(worker={"processes": 3, "threads": 4, "queues": ["a", "b"]}))
    container = deployments(objs)["worker"]["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == [
        "worker",
        "--processes",
        "3",
        "--threads",
        "4",
        "--queues",
        "a",
        "b",
    ]
    sched = deployments(objs)["scheduler"]["spec"]["template"]["spec"]["containers"][0]
    assert sched["args"] == ["scheduler"]


def test_migration_job_is_a_hook(chart: Any) -> None:
    objs = render(chart, values())
    job = one(objs, "Job", f"{FULLNAME}-migrate")
    notes = job["metadata"]["annotations"]
    assert hook_events(job) == {"pre-install", "pre-upgrade"}
    assert "helm.sh/hook-weight" in notes
    policy = {p.strip() for p in notes["helm.sh/hook-delete-policy"].split(",")}
    assert policy == {"before-hook-creation", "hook-succeeded"}
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert not by_kind(render(chart, values(migration={"enabled": False})), "Job")


def referenced(pod: dict[str, Any]) -> dict[str, set[str]]:
    """Names of the ConfigMaps, Secrets and ServiceAccount a pod spec needs to start."""
    refs: dict[str, set[str]] = {"ConfigMap": set(), "Secret": set(), "ServiceAccount": set()}
    refs["ServiceAccount"].add(pod.get("serviceAccountName", "default"))
    for vol in pod.get("volumes", []):
        if "configMap" in vol:
            refs["ConfigMap"].add(vol["configMap"]["name"])
        if "secret" in vol:
            refs["Secret"].add(vol["secret"]["secretName"])
    for container in pod["containers"]:
        for src in container.get("envFrom", []):
            if "secretRef" in src:
                refs["Secret"].add(src["secretRef"]["name"])
            if "configMapRef" in src:
                refs["ConfigMap"].add(src["configMapRef"]["name"])
        for env in container.get("env", []):
            ref = env.get("valueFrom", {})
            if "secretKeyRef" in ref:
                refs["Secret"].add(ref["secretKeyRef"]["name"])
            if "configMapKeyRef" in ref:
                refs["ConfigMap"].add(ref["configMapKeyRef"]["name"])
    return refs


@pytest.mark.parametrize(
    "case",
    [
        {},
        {"existingSecret": "cw-secrets"},
        {"serviceAccount": {"create": False, "name": "cw"}},
        {"migration": {"hookWeight": 7}},
    ],
    ids=["chart-secret", "existing-secret", "existing-sa", "custom-weight"],
)
def test_migration_job_dependencies_exist_at_hook_time(chart: Any, case: dict[str, Any]) -> None:
    """Everything the Job needs is a pre-install AND pre-upgrade hook with a lower weight
    (created before it on install and refreshed before it on upgrade), or is external."""
    vals = values(**case)
    objs = render(chart, vals)
    job = one(objs, "Job", f"{FULLNAME}-migrate")
    refs = referenced(job["spec"]["template"]["spec"])
    external: dict[str, set[str]] = {
        "Secret": {vals["existingSecret"]} if vals.get("existingSecret") else set(),
        "ServiceAccount": {"cw", "default"} if case.get("serviceAccount") else set(),
        "ConfigMap": set(),
    }
    for kind, names in refs.items():
        for name in names:
            if name in external[kind]:
                # Provided by the user: the chart must not also render it.
                assert name not in by_kind(objs, kind)
                continue
            dep = one(objs, kind, name)
            assert {"pre-install", "pre-upgrade"} <= hook_events(dep), f"{kind}/{name}"
            assert hook_weight(dep) < hook_weight(job), f"{kind}/{name} not before the Job"
            policy = dep["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
            assert "before-hook-creation" in policy
    assert refs["Secret"], "the Job needs the database URL"
    assert refs["ConfigMap"], "the Job mounts schedules.yaml like the other pods"
    # The hook copies hold the same data as the release resources the Deployments use.
    if not vals.get("existingSecret"):
        (secret_name,) = refs["Secret"]
        assert one(objs, "Secret", secret_name)["data"] == one(objs, "Secret", FULLNAME)["data"]
    (cm_name,) = refs["ConfigMap"]
    assert (
        one(objs, "ConfigMap", cm_name)["data"]
        == one(objs, "ConfigMap", f"{FULLNAME}-schedules")["data"]
    )
    # The Deployments' own resources are ordinary release resources, not hooks.
    for dep in deployments(objs).values():
        for kind, names in referenced(dep["spec"]["template"]["spec"]).items():
            for name in names - external[kind]:
                assert not hook_events(one(objs, kind, name)), f"{kind}/{name} is a hook"


def checksums(objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    out = {}
    for component, dep in deployments(objs).items():
        notes = dep["spec"]["template"]["metadata"]["annotations"]
        out[component] = {k: v for k, v in notes.items() if k.startswith("checksum/")}
        assert set(out[component]) == {"checksum/schedules", "checksum/secret"}
    return out


def test_checksum_annotations_roll_pods_only_on_change(chart: Any) -> None:
    base = checksums(render(chart, values(schedules=schedules_text())))
    same = checksums(render(chart, values(schedules=schedules_text())))
    unrelated = checksums(render(chart, values(schedules=schedules_text(), worker={"threads": 2})))
    assert base == same == unrelated
    changed = checksums(render(chart, values(schedules=schedules_text() + "# edited\n")))
    for component in ("scheduler", "worker"):
        assert changed[component]["checksum/schedules"] != base[component]["checksum/schedules"]
        assert changed[component]["checksum/secret"] == base[component]["checksum/secret"]
    new_secret = checksums(render(chart, values(secrets={"redisUrl": "redis://:other@r:6379/1"})))
    for component in ("scheduler", "worker"):
        assert new_secret[component]["checksum/secret"] != base[component]["checksum/secret"]


def test_existing_secret_is_referenced_not_rendered(chart: Any) -> None:
    objs = render(chart, values(existingSecret="cw-secrets", secrets={"databaseUrl": ""}))
    assert by_kind(objs, "Secret") == {}
    for name, pod in pod_specs(objs).items():
        assert referenced(pod)["Secret"] == {"cw-secrets"}, name
    # Without it the chart renders its own Secret, empty optional keys left out.
    objs = render(chart, values())
    secret = one(objs, "Secret", FULLNAME)
    assert set(secret["data"]) == {"CRONWORK_DATABASE_URL", "CRONWORK_REDIS_URL"}
    for dep in deployments(objs).values():
        assert referenced(dep["spec"]["template"]["spec"])["Secret"] == {FULLNAME}


def test_security_context_everywhere(chart: Any) -> None:
    objs = render(chart, VALIDATION_CASES["everything-on"])
    specs = pod_specs(objs)
    assert len(specs) == 3
    for name, pod in specs.items():
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True, name
        assert psc["runAsUser"] == psc["runAsGroup"] == psc["fsGroup"] == 10001, name
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]
        assert "emptyDir" in tmp, name
        for container in pod.get("initContainers", []) + pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/tmp"]["name"] == "tmp", name
            assert mounts["/etc/cronwork"]["readOnly"] is True, name
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["CRONWORK_SCHEDULES_FILE"] == "/etc/cronwork/schedules.yaml", name
            assert container["resources"]["requests"], name
    sas = by_kind(objs, "ServiceAccount")
    assert all(sa["automountServiceAccountToken"] is False for sa in sas.values())


def test_probes_and_grace_periods(chart: Any) -> None:
    deps = deployments(render(chart, values()))
    for component, grace in (("scheduler", 30), ("worker", 60)):
        pod = deps[component]["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] == grace
        (container,) = pod["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}

    deps = deployments(
        render(
            chart,
            values(
                scheduler={"terminationGracePeriodSeconds": 45},
                worker={"terminationGracePeriodSeconds": 900, "livenessProbe": {"type": "exec"}},
            ),
        )
    )
    assert deps["scheduler"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    worker = deps["worker"]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] == 900
    probe = worker["containers"][0]["livenessProbe"]
    assert probe["exec"] == {"command": ["cronwork", "worker", "--check"]}
    assert "httpGet" not in probe and "type" not in probe


def test_prometheus_scrape_annotations_and_service_monitor(chart: Any) -> None:
    objs = render(chart, values())
    for dep in deployments(objs).values():
        notes = dep["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/port"] == "8080"
        assert notes["prometheus.io/path"] == "/metrics"
    assert by_kind(objs, "ServiceMonitor") == {}
    services = by_kind(objs, "Service")
    assert set(services) == {f"{FULLNAME}-scheduler", f"{FULLNAME}-worker"}

    objs = render(chart, values(metrics={"serviceMonitor": {"enabled": True}}))
    (monitor,) = by_kind(objs, "ServiceMonitor").values()
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    for svc in by_kind(objs, "Service").values():
        assert selector.items() <= svc["metadata"]["labels"].items()
        assert svc["spec"]["ports"][0]["name"] == "http"
        assert svc["spec"]["ports"][0]["targetPort"] == "http"
    # Each Service selects exactly its component's pods.
    for component, dep in deployments(objs).items():
        svc = one(objs, "Service", f"{FULLNAME}-{component}")
        assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


def test_hpa_only_when_enabled(chart: Any) -> None:
    objs = render(chart, values())
    assert by_kind(objs, "HorizontalPodAutoscaler") == {}
    assert deployments(objs)["worker"]["spec"]["replicas"] == 2

    objs = render(chart, values(worker={"autoscaling": {"enabled": True, "maxReplicas": 20}}))
    hpa = one(objs, "HorizontalPodAutoscaler", f"{FULLNAME}-worker")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-worker"
    assert hpa["spec"]["maxReplicas"] == 20
    # The HPA owns the replica count: the Deployment must not fight it on upgrade.
    assert "replicas" not in deployments(objs)["worker"]["spec"]


def test_notes_render(chart: Any) -> None:
    out = chart.render(values(), name=RELEASE, namespace=NAMESPACE)
    notes = next(text for path, text in out.items() if path.endswith("NOTES.txt"))
    assert f"{FULLNAME}-migrate" in notes
    assert "pw@" not in notes


# ---------------------------------------------------------------------------- dashboard


def b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def test_dashboard_defaults_on_the_schedulers_without_exposure(chart: Any) -> None:
    objs = render(chart, values())
    env = {
        e["name"]: e.get("value")
        for e in deployments(objs)["scheduler"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["CRONWORK_DASHBOARD"] == "true"
    assert by_kind(objs, "Ingress") == {}  # off by default: kubectl port-forward needs none
    assert "CRONWORK_DASHBOARD_TOKEN" not in one(objs, "Secret", FULLNAME)["data"]
    off = render(chart, values(dashboard={"scheduler": False}))
    env = deployments(off)["scheduler"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "CRONWORK_DASHBOARD", "value": "false"} in env


def test_dashboard_tokens_web_deployment_and_ingress(chart: Any) -> None:
    vals = VALIDATION_CASES["dashboard-web-and-ingress"]
    objs = render(chart, vals)
    secret = one(objs, "Secret", FULLNAME)["data"]
    assert secret["CRONWORK_DASHBOARD_TOKEN"] == b64("admin-token")
    assert secret["CRONWORK_DASHBOARD_READONLY_TOKEN"] == b64("read-token")
    # The hook's copy holds the same data (the migration Job sees the same env).
    assert one(objs, "Secret", f"{FULLNAME}-migrate")["data"] == secret
    web = one(objs, "Deployment", f"{FULLNAME}-web")
    pod = web["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["web"] and web["spec"]["replicas"] == 2
    assert referenced(pod)["Secret"] == {FULLNAME}  # the token comes from the Secret
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    svc = one(objs, "Service", f"{FULLNAME}-web")
    assert svc["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    ingress = one(objs, "Ingress", f"{FULLNAME}-dashboard")
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "cronwork.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{FULLNAME}-web", "port": {"name": "http"}}
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [
        {"hosts": ["cronwork.example.com"], "secretName": "cronwork-tls"}
    ]
    # Without the web Deployment the Ingress goes to the schedulers, which serve it too.
    objs = render(
        chart,
        values(secrets={"dashboardToken": "t"}, dashboard={"ingress": {"enabled": True}}),
    )
    rule = one(objs, "Ingress", f"{FULLNAME}-dashboard")["spec"]["rules"][0]
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == f"{FULLNAME}-scheduler"
    assert "host" not in rule


def test_a_shared_dashboard_needs_a_token(chart: Any) -> None:
    for dashboard in ({"web": {"enabled": True}}, {"ingress": {"enabled": True}}):
        with pytest.raises(helm.HelmRenderError, match=r"secrets\.dashboardToken is required"):
            chart.render(values(dashboard=dashboard), name=RELEASE, namespace=NAMESPACE)
    # An existing Secret is the user's to fill (CRONWORK_DASHBOARD_TOKEN).
    objs = render(chart, values(existingSecret="cw", dashboard={"web": {"enabled": True}}))
    assert referenced(one(objs, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"])[
        "Secret"
    ] == {"cw"}
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values(dashboard={"ingress": {"enabled": True, "host": "Bad_Host"}}))
