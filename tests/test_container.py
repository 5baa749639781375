"""The Dockerfile: linted with hadolint, and its exact CMD and ENV run from the built wheel.

No Docker engine runs here, so the image is reproduced as far as the host allows: the wheel is
built and installed with the pinned dependencies into a fresh venv, the models are laid out as
in the image, and the CMD is started with the image's environment (only the port changes).
"""

import json
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import requests

from tests.live import free_port, wait_until_ready

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    return [tuple(line.split(" ", 1)) for line in lines]


def runtime_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (op, _) in enumerate(steps) if op == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env = {}
    for op, args in runtime_stage():
        if op == "ENV":
            env.update(pair.split("=", 1) for pair in args.split())
    return env


def exec_form(op: str) -> list[str]:
    """The JSON argument list of CMD, or of HEALTHCHECK's CMD."""
    args = next(args for name, args in runtime_stage() if name == op)
    return json.loads(args[args.index("[") :])


def test_hadolint_passes():
    result = subprocess.run(
        [str(BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_is_multistage_slim_nonroot_and_capped():
    bases = [args for op, args in instructions() if op == "FROM"]
    assert len(bases) == 2 and all("-slim" in base for base in bases)
    user = next(args for op, args in runtime_stage() if op == "USER")
    assert not user.startswith(("0", "root"))
    env = image_env()
    for variable in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "NUMBA_NUM_THREADS",
        "LINESCORE_THREADS",
    ):
        assert env[variable] == "1"
    assert env["NUMBA_CACHE_DIR"].startswith("/tmp/")
    assert ("COPY", "models ./models") in runtime_stage()
    healthcheck = next(args for op, args in runtime_stage() if op == "HEALTHCHECK")
    assert "/readyz" in healthcheck and "curl" not in healthcheck
    assert exec_form("CMD")[:2] == ["linescore", "serve"]


@pytest.mark.slow
def test_image_command_serves_from_the_installed_wheel(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [str(BIN / "pip"), "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("linescore-*.whl")
    assert "service/openapi.yaml" in zipfile.ZipFile(wheel).namelist()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--constraint",
            str(ROOT / "requirements.lock"),
            str(wheel),
        ],
        check=True,
    )

    app = tmp_path / "app"
    shutil.copytree(ROOT / "models", app / "models")
    files_before = sorted(app.rglob("*"))
    port = free_port()
    image_roots = {"/app": app, "/tmp": tmp_path}  # the image's paths, laid out under tmp_path

    def on_host(value: str) -> str:
        root = next((r for r in image_roots if value == r or value.startswith(r + "/")), None)
        return value if root is None else str(image_roots[root]) + value[len(root) :]

    env = {key: on_host(value) for key, value in image_env().items()}
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    swap = {"0.0.0.0": "127.0.0.1", "8080": str(port)}
    command = [swap.get(arg, arg) for arg in exec_form("CMD")]
    installed_before = sorted(venv.rglob("*"))
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(url, server)
        reply = requests.post(
            f"{url}/v1/score", timeout=10, json={"detectid": 1, "cutout": [[0.5] * 32] * 9}
        )
        assert reply.status_code == 200 and reply.json()["decision"] in ("real", "fake")
        probe = [arg.replace("8080", str(port)) for arg in exec_form("HEALTHCHECK")]
        assert subprocess.run(probe[probe.index("python") :], env=env).returncode == 0
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
        log.close()
    assert server.returncode == 0, (tmp_path / "server.log").read_text()[-2000:]
    assert sorted(app.rglob("*")) == files_before  # nothing written under /app
    assert sorted(venv.rglob("*")) == installed_before  # nor where the code is installed
