"""The Kubernetes path checked as far as it can be without a cluster: the Job that Dagster's K8sRunLauncher would
create for a retrain run is rendered with dagster-k8s's own code (the launcher's settings from
deploy/helm/values.yaml, the run's `dagster-k8s/config` tag from the retrain job as the definitions build it) and
validated against Kubernetes' OpenAPI schema (kubernetes-validate, schemas bundled, offline). The Helm chart itself
is not rendered: `helm` does not install from the package registries (deploy/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S_VERSION = "1.31"  # a Kubernetes release the official chart supports


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _run_job_manifest(run_tags: dict, run_id: str = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc") -> dict:
    """What K8sRunLauncher._launch_k8s_job_with_args builds: the launcher's container context (values.yaml's
    k8sRunLauncher block, as the chart hands it to the launcher) merged with the run's tags, then the Job."""
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        UserDefinedDagsterK8sConfig,
        construct_dagster_k8s_job,
        get_job_name_from_run_id,
        get_user_defined_k8s_config,
    )
    from kubernetes.client import ApiClient

    values = yaml.safe_load((ROOT / "deploy" / "helm" / "values.yaml").read_text())
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    deployment = values["dagster-user-deployments"]["deployments"][0]
    base = K8sContainerContext(
        env_secrets=[s["name"] for s in launcher.get("envSecrets", [])],
        namespace="default",
        run_k8s_config=UserDefinedDagsterK8sConfig.from_dict(
            {_snake(k): v for k, v in launcher.get("runK8sConfig", {}).items()}),
    )
    context = base.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(run_tags)))
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    job_name = get_job_name_from_run_id(run_id)
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image=image, dagster_home="/opt/dagster/dagster_home",
                                       instance_config_map="quant-dagster-instance",
                                       postgres_password_secret="dagster-postgresql-secret"),
        args=["dagster", "api", "execute_run", "{}"], job_name=job_name, pod_name=job_name, component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run_tags.get("quant/universe", "job"), "dagster/run-id": run_id},
    )
    return ApiClient().sanitize_for_serialization(job)


def _retrain_tags(monkeypatch, tmp_path, **env) -> dict:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("QUANT_HOME", str(tmp_path / "quant"))
    from quant_assets.definitions import build_definitions

    defs = build_definitions()
    job = next(j for j in defs.jobs if j.name.startswith("retrain_"))
    return dict(job.tags)


@pytest.mark.parametrize("gpu", [False, True])
def test_the_run_job_of_a_retrain_is_a_valid_kubernetes_job(monkeypatch, tmp_path, gpu):
    import kubernetes_validate

    tags = _retrain_tags(monkeypatch, tmp_path, **({"QUANT_TRAINING_GPU": "1",
                                                    "QUANT_GPU_NODE_SELECTOR": "gpu=h200"} if gpu else {}))
    manifest = _run_job_manifest(tags)
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)  # raises ValidationError naming the field
    pod = manifest["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/quant:latest"
    assert {"secretRef": {"name": "quant-secrets"}} in container["envFrom"]
    assert container["resources"]["requests"] == {"cpu": "2", "memory": "8Gi"}
    if gpu:
        assert container["resources"]["limits"] == {"memory": "16Gi", "nvidia.com/gpu": "1"}
        assert pod["nodeSelector"] == {"gpu": "h200"}
    else:
        assert "nvidia.com/gpu" not in container["resources"]["limits"] and "nodeSelector" not in pod


def test_a_broken_manifest_is_refused_by_the_validator(monkeypatch, tmp_path):
    """The validator is not a formality: a misspelt field and a wrong type are refused."""
    import kubernetes_validate

    manifest = _run_job_manifest(_retrain_tags(monkeypatch, tmp_path))
    manifest["spec"]["template"]["spec"]["nodeSelectr"] = {"gpu": "h200"}
    with pytest.raises(kubernetes_validate.ValidationError, match="nodeSelectr"):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
    manifest = _run_job_manifest(_retrain_tags(monkeypatch, tmp_path))
    manifest["spec"]["backoffLimit"] = "four"
    with pytest.raises(kubernetes_validate.ValidationError, match="four"):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)
