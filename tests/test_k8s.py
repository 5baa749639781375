"""deploy/k8s: every manifest against the Kubernetes schemas, and the rules tying it to the service.

The schemas (kubernetes-validate, strict, offline) catch misspelt, misplaced and mistyped fields.
The other tests check what no schema can: that the probes, ports, command, env, timing, resources
and labels agree with the image (Dockerfile), the server (service/config.py, the Flask app) and the
measurements (bench/RESULTS.md), so a change on either side that breaks a deployment fails here.
"""

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"

# The oldest Kubernetes these manifests claim (the preStop `sleep` action is beta and on by
# default from 1.30, GA in 1.34) and the newest one kubernetes-validate 1.37.0 ships schemas for.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")

# Variables read by libraries rather than by Settings, each for a reason the image relies on.
LIBRARY_VARIABLES = {
    "PROMETHEUS_MULTIPROC_DIR",  # prometheus-client: where the workers share metrics
    "NUMBA_CACHE_DIR",  # numba (reference UMAP path): JIT cache, must be writable
    "MPLCONFIGDIR",  # matplotlib: config/cache dir, must be writable
    "OMP_NUM_THREADS",  # thread pools, capped per worker
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "MALLOC_ARENA_MAX",  # glibc: fewer arenas, less fragmentation per worker
    "MALLOC_MMAP_THRESHOLD_",  # glibc: a batch's large buffers go back to the system when freed
    "MALLOC_TRIM_THRESHOLD_",  # glibc: ... while the heap keeps room for the next batch
    "PYTHONDONTWRITEBYTECODE",  # no .pyc writes on the read-only root
    "PYTHONUNBUFFERED",
}
# Of those, the directories the service writes into: all must be on a writable volume.
WRITABLE_DIR_VARIABLES = ("PROMETHEUS_MULTIPROC_DIR", "NUMBA_CACHE_DIR", "MPLCONFIGDIR")

PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys (it would silently keep the last one)."""


def _mapping_without_duplicates(loader: StrictLoader, node: yaml.MappingNode) -> dict:
    keys = [loader.construct_object(key, deep=True) for key, _ in node.value]
    duplicates = sorted({str(key) for key in keys if keys.count(key) > 1})
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {duplicates}", node.start_mark
        )
    return loader.construct_mapping(node, deep=True)


StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates
)


def load_all(path: Path) -> list[dict]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=StrictLoader) if doc]


def kustomization() -> dict:
    return load_all(K8S / "kustomization.yaml")[0]


def resource_files() -> list[Path]:
    return [K8S / name for name in kustomization()["resources"]]


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    """Every object kustomize would apply, by kind (one of each is expected)."""
    by_kind: dict[str, dict] = {}
    for path in resource_files():
        for doc in load_all(path):
            assert doc["kind"] not in by_kind, f"second {doc['kind']} in {path.name}"
            by_kind[doc["kind"]] = doc
    return by_kind


@pytest.fixture(scope="module")
def pod(objects) -> dict:
    return objects["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod) -> dict:
    (only,) = pod["spec"]["containers"]
    return only


@pytest.fixture(scope="module")
def env(container) -> dict[str, dict]:
    names = [item["name"] for item in container["env"]]
    assert len(names) == len(set(names)), f"env set twice: {names}"
    return {item["name"]: item for item in container["env"]}


@pytest.fixture(scope="module")
def settings(env) -> Settings:
    """The settings the server will read from the manifest's literal env (validated by pydantic)."""
    return Settings.from_environ(
        {name: item["value"] for name, item in env.items() if "value" in item}
    )


# --- the Dockerfile (runtime stage) ---------------------------------------------------------


def dockerfile_runtime_stage() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    steps = [
        tuple(line.strip().split(" ", 1))
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    last_from = max(i for i, (op, _) in enumerate(steps) if op.upper() == "FROM")
    return [(op.upper(), args) for op, args in steps[last_from:]]


def dockerfile(op: str) -> list[str]:
    return [args for name, args in dockerfile_runtime_stage() if name == op]


def image_env() -> dict[str, str]:
    pairs = [pair.split("=", 1) for args in dockerfile("ENV") for pair in args.split()]
    return dict(pairs)


# --- Kubernetes quantities --------------------------------------------------------------------

QUANTITY_SUFFIXES = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
}


def quantity(value: str | int) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(value))
    assert match and match[2] in QUANTITY_SUFFIXES, f"unparsed quantity {value!r}"
    return float(match[1]) * QUANTITY_SUFFIXES[match[2]]


def worst_measured_cold_start_seconds() -> float:
    """The slowest cold start to /readyz 200 from the last `make bench` (bench/RESULTS.md's
    "Cold start" table: every UMAP path, the reference one with an empty numba cache too)."""
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    section = re.search(r"^## Cold start[^\n]*\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert section, "bench/RESULTS.md no longer has a '## Cold start' section"
    seconds = re.findall(r"^\|[^|\n]+\|\s*([\d.]+)\s*\|\s*$", section[1], re.MULTILINE)
    assert seconds, "bench/RESULTS.md's cold start table has no '| path | seconds |' rows"
    return max(float(value) for value in seconds)


def measured_worker_rss_bytes() -> float:
    """The largest resident memory per worker from the last `make bench` (bench/RESULTS.md)."""
    text = (ROOT / "bench" / "RESULTS.md").read_text()
    match = re.search(r"\|\s*resident memory[^|]*\|\s*([\d,]+) MB", text)
    assert match, "bench/RESULTS.md no longer reports 'resident memory ... | N MB'"
    return float(match[1].replace(",", "")) * 1e6


# --- the manifests as files -------------------------------------------------------------------


def test_kustomization_lists_every_manifest_once():
    meta = kustomization()
    assert (meta["apiVersion"], meta["kind"]) == (
        "kustomize.config.k8s.io/v1beta1",
        "Kustomization",
    )
    listed = meta["resources"]
    assert len(listed) == len(set(listed))
    on_disk = {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(listed) == on_disk


def test_yaml_loader_refuses_duplicate_keys():
    # A manifest with a key set twice would otherwise pass with whichever value came last.
    with pytest.raises(yaml.constructor.ConstructorError, match="duplicate keys"):
        yaml.load("a: 1\nb: 2\na: 3\n", Loader=StrictLoader)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("path", resource_files(), ids=lambda path: path.name)
def test_manifest_passes_strict_schema_validation(path, version):
    docs = load_all(path)
    assert docs
    for doc in docs:
        # validate() falls back to the newest schema not newer than asked: insist on the pinned one
        checked = kubernetes_validate.validate(doc, version, strict=True)
        assert checked == version.rsplit(".", 1)[0]


def test_strict_validation_rejects_a_misspelt_field(objects):
    # Proves strict mode is on: a lenient check would accept this and the probe would be lost.
    broken = copy.deepcopy(objects["Deployment"])
    container = broken["spec"]["template"]["spec"]["containers"][0]
    container["livenesProbe"] = container.pop("livenessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


# --- container: image, command, ports, probes --------------------------------------------------


def test_command_is_the_dockerfiles_cmd(container):
    # With no ENTRYPOINT, `command` replaces exactly the CMD; both must start the same server.
    assert dockerfile("ENTRYPOINT") == []
    (cmd,) = dockerfile("CMD")
    assert container["command"] + container.get("args", []) == json.loads(cmd)
    assert container["image"] == "linescore:2.1.0"


def test_the_server_listens_on_the_named_port(container):
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    command = container["command"]
    assert ports == {"http": int(command[command.index("--port") + 1])}
    exposed = {port.split("/")[0] for args in dockerfile("EXPOSE") for port in args.split()}
    assert str(ports["http"]) in exposed


def probe_app(ready: bool, draining: bool):
    """The real Flask app around a stand-in runtime: routing, auth hooks and health views only."""
    from service.drain import DrainFlag
    from service.web.app import create_app

    drain = DrainFlag()
    if draining:
        drain.set()
    runtime = SimpleNamespace(ready=ready, state="ready" if ready else "loading", error=None)
    # A token is configured so the test also shows that the probes and /metrics stay open.
    return create_app(Settings(api_token="s3cret"), runtime=runtime, drain=drain)


def test_probes_use_the_right_endpoints_on_the_named_port(container):
    probes = {kind: container[kind]["httpGet"] for kind in PROBES}
    named = {port["name"] for port in container["ports"]}
    assert all(probe["port"] in named for probe in probes.values())
    # Startup and readiness wait for a verified, warm model; liveness must not, or a pod that is
    # loading or draining would be restarted.
    assert probes["startupProbe"]["path"] == probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/livez"


@pytest.mark.parametrize(
    ("ready", "draining", "livez", "readyz"),
    [(False, False, 200, 503), (True, False, 200, 200), (True, True, 200, 503)],
    ids=["loading", "ready", "draining"],
)
def test_probe_endpoints_answer_as_the_manifest_assumes(container, ready, draining, livez, readyz):
    client = probe_app(ready, draining).test_client()
    answers = {kind: client.get(container[kind]["httpGet"]["path"]).status_code for kind in PROBES}
    assert answers == {"startupProbe": readyz, "readinessProbe": readyz, "livenessProbe": livez}
    # ... while the scoring API does require the token (so "open" above is not trivially true)
    assert client.get("/v1/model").status_code == 401


def test_prometheus_annotations_point_at_the_metrics_endpoint(pod, container):
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container["ports"][0]["containerPort"]
    response = (
        probe_app(ready=True, draining=False).test_client().get(annotations["prometheus.io/path"])
    )
    assert response.status_code == 200
    assert response.mimetype == "text/plain"


def test_startup_probe_allows_the_slowest_measured_cold_start(container):
    startup = container["startupProbe"]
    budget = (
        startup.get("initialDelaySeconds", 0)
        + startup["periodSeconds"] * startup["failureThreshold"]
    )
    # Twice the slowest measured, for a node busier than the bench machine.
    worst = worst_measured_cold_start_seconds()
    assert budget >= 2 * worst, f"startup budget {budget} s < 2 x {worst} s (bench/RESULTS.md)"


# --- env, timing and resources -----------------------------------------------------------------


def test_env_names_are_settings_or_known_library_variables(env):
    settings_names = {f"LINESCORE_{name.upper()}" for name in Settings.model_fields}
    unknown = set(env) - settings_names - LIBRARY_VARIABLES
    assert not unknown, f"not read by anything: {sorted(unknown)}"


def test_api_token_comes_from_an_optional_secret(env):
    token = env["LINESCORE_API_TOKEN"]
    assert "value" not in token  # never a literal in the manifest
    assert token["valueFrom"]["secretKeyRef"]["optional"] is True


def test_termination_grace_covers_prestop_drain_and_graceful_stop(pod, container, env, settings):
    # The timing must be set here, not left to defaults that could change under the manifest.
    assert {"LINESCORE_DRAIN_SECONDS", "LINESCORE_GRACEFUL_TIMEOUT"} <= set(env)
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pre_stop > 0  # endpoints are removed while the pod still serves
    needed = pre_stop + settings.drain_seconds + settings.graceful_timeout
    assert pod["spec"]["terminationGracePeriodSeconds"] > needed


def test_resources_fit_the_workers_and_the_measured_memory(container, settings):
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    for resource in ("cpu", "memory"):
        assert quantity(requests[resource]) <= quantity(limits[resource]), resource
    # One single-threaded worker per CPU: the HPA's utilisation is relative to this request.
    assert quantity(requests["cpu"]) == settings.workers * settings.threads
    assert quantity(limits["cpu"]) == settings.workers * settings.threads
    steady = settings.workers * measured_worker_rss_bytes()
    assert quantity(requests["memory"]) >= 1.25 * steady
    assert quantity(limits["memory"]) >= 2 * steady


# --- security and the read-only root -----------------------------------------------------------


def test_pod_runs_as_the_images_non_root_user_with_nothing_extra(pod, container):
    (user,) = dockerfile("USER")
    uid, gid = (int(part) for part in user.split(":"))
    pod_security, security = pod["spec"]["securityContext"], container["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (uid, gid) == (10001, 10001)
    assert pod_security["seccompProfile"]["type"] == "RuntimeDefault"
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert "add" not in security["capabilities"]
    assert security["readOnlyRootFilesystem"] is True
    assert pod["spec"]["automountServiceAccountToken"] is False
    # A Service named "linescore" would otherwise inject LINESCORE_PORT=tcp://... and friends.
    assert pod["spec"]["enableServiceLinks"] is False


def test_every_directory_the_service_writes_is_on_an_emptydir(pod, container, env):
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    writable = [
        mount["mountPath"]
        for mount in container["volumeMounts"]
        if "emptyDir" in volumes[mount["name"]] and not mount.get("readOnly", False)
    ]
    assert "/tmp" in writable  # tempfile, gunicorn's worker heartbeats
    # The manifest's value wins over the image's; either way the directory must be writable.
    directories = {**image_env(), **{name: item.get("value") for name, item in env.items()}}
    for variable in WRITABLE_DIR_VARIABLES:
        path = directories[variable]
        assert any(Path(path).is_relative_to(mount) for mount in writable), (variable, path)


# --- Service, HPA, PDB --------------------------------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def test_service_pdb_and_spread_select_the_deployments_pods(objects, pod, container):
    labels = pod["metadata"]["labels"]
    deployment = objects["Deployment"]["spec"]
    assert selects(deployment["selector"]["matchLabels"], labels)
    assert selects(objects["Service"]["spec"]["selector"], labels)
    assert selects(objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"], labels)
    for spread in pod["spec"]["topologySpreadConstraints"]:
        assert selects(spread["labelSelector"]["matchLabels"], labels)
    service = objects["Service"]["spec"]
    assert service.get("type", "ClusterIP") == "ClusterIP"
    assert [(port["port"], port["targetPort"]) for port in service["ports"]] == [(80, "http")]


def test_hpa_scales_the_deployment_on_cpu(objects, container):
    deployment, hpa = objects["Deployment"], objects["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        deployment["apiVersion"],
        deployment["kind"],
        deployment["metadata"]["name"],
    )
    assert 2 <= hpa["minReplicas"] < hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert "cpu" in container["resources"]["requests"]  # utilisation is measured against it
    # The HPA owns the replica count; a fixed one would be re-applied by every `kubectl apply`.
    assert "replicas" not in deployment["spec"]


def test_pdb_lets_a_drain_proceed_and_keeps_a_pod(objects):
    pdb = objects["PodDisruptionBudget"]["spec"]
    pods = objects["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    # Exactly one of the two is allowed (also enforced by the API server).
    assert ("minAvailable" in pdb) != ("maxUnavailable" in pdb)
    evictable = pdb["maxUnavailable"] if "maxUnavailable" in pdb else pods - pdb["minAvailable"]
    assert 1 <= evictable < pods


def test_rollout_never_drops_capacity(objects):
    rolling = objects["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert rolling["maxSurge"] >= 1
