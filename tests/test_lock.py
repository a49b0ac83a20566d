"""uv.lock is what the README's commands install (scripts/bootstrap.sh: `uv sync --locked`): it must agree with
pyproject.toml, and uv must refuse a lock that does not."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _uv() -> str:
    exe = Path(sys.executable).parent / "uv"
    if exe.exists():
        return str(exe)
    found = shutil.which("uv")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("uv is not installed next to this Python: scripts/bootstrap.sh installs it")
        pytest.skip("uv is not installed (scripts/bootstrap.sh installs it into .venv)")
    return found


def _lock_check(project: Path, *, offline: bool = True) -> subprocess.CompletedProcess[str]:
    # --offline: a lock that agrees needs nothing from the network (no resolution happens). A lock that disagrees
    # is re-resolved before uv refuses it, which needs the registry's index pages: a fresh machine's uv cache holds
    # the wheels `uv sync` installed but not those pages, so that check goes to the package registry (reachable).
    args = [_uv(), "lock", "--check"] + (["--offline"] if offline else [])
    return subprocess.run(args, cwd=project, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "UV_PYTHON_DOWNLOADS": "never"})


def test_lock_agrees_with_pyproject() -> None:
    out = _lock_check(ROOT)
    assert out.returncode == 0, (
        f"uv.lock does not match pyproject.toml: run `.venv/bin/uv lock`, run the tests, commit both\n{out.stderr}")


def test_a_lock_that_disagrees_is_refused(tmp_path: Path) -> None:
    for name in ("pyproject.toml", "uv.lock", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    assert '    "pyyaml>=6",\n' in text
    pyproject.write_text(text.replace('    "pyyaml>=6",\n', ""))  # a dependency dropped without re-locking
    out = _lock_check(tmp_path, offline=False)
    assert out.returncode != 0 and "needs to be updated" in out.stderr, out.stdout + out.stderr


def test_bootstrap_pins_the_uv_that_wrote_the_lock() -> None:
    """scripts/bootstrap.sh installs one uv version; the lock's format is that uv's."""
    pinned = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "scripts" / "bootstrap.sh").read_text(), re.M)
    assert pinned is not None
    out = subprocess.run([_uv(), "--version"], capture_output=True, text=True, timeout=30)
    assert out.stdout.split()[1] == pinned.group(1), out.stdout
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    versions = {p["name"]: p["version"] for p in lock["package"]}
    # the numerical stack is one version for every Python the project supports (fork-strategy "fewest")
    for name in ("jax", "jaxlib", "numpy", "scipy", "optax", "optuna"):
        assert sum(p["name"] == name for p in lock["package"]) == 1, name
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dagster = next(d for d in pyproject["project"]["dependencies"] if d.startswith("dagster=="))
    assert versions["dagster"] == versions["dagster-dg-cli"] == dagster.split("==")[1]


def test_the_docker_image_installs_the_lock_with_the_same_uv(tmp_path: Path) -> None:
    """deploy/docker/Dockerfile installs uv.lock's pins (uv export, hashes) with the uv of scripts/bootstrap.sh;
    the export it runs works on the committed lock and pins every package with hashes."""
    docker = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    pinned = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "scripts" / "bootstrap.sh").read_text(), re.M).group(1)
    # --extra k8s: a run worker on Kubernetes loads the instance, whose run launcher is dagster-k8s's
    assert f"ARG UV_VERSION={pinned}\n" in docker
    assert "uv export --frozen --no-dev --extra k8s --no-emit-project" in docker
    assert "--require-hashes" in docker and "pip install --no-cache-dir -e ." not in docker
    out = subprocess.run([_uv(), "export", "--frozen", "--no-dev", "--extra", "k8s", "--no-emit-project", "-o",
                          str(tmp_path / "r.txt")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "r.txt").read_text()
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    assert "jax==" + next(p["version"] for p in lock["package"] if p["name"] == "jax") in text
    assert "--hash=sha256:" in text and "dagster-k8s==" in text
    assert "pytest==" not in text and "kubernetes-validate==" not in text  # dev tools stay out of the image
