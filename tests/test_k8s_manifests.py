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


def _run_job_manifest(run_tags: dict, run_id: str = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
                      step_tags: dict | None = None) -> dict:
    """What K8sRunLauncher._launch_k8s_job_with_args builds: the launcher's container context (values.yaml's
    k8sRunLauncher block, as the chart hands it to the launcher) merged with the run's tags, then the Job. With
    `step_tags`, the Job k8s_job_executor builds for one step: the launcher's context merged with the step's op tags."""
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
    # the executor leaves the run's tags out of step pods (dagster_k8s.executor: include_run_tags=False)
    tags = run_tags if step_tags is None else step_tags
    context = base.merge(K8sContainerContext(run_k8s_config=get_user_defined_k8s_config(tags)))
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    job_name = get_job_name_from_run_id(run_id)
    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(job_image=image, dagster_home="/opt/dagster/dagster_home",
                                       instance_config_map="quant-dagster-instance",
                                       postgres_password_secret="dagster-postgresql-secret"),
        args=["dagster", "api", "execute_run" if step_tags is None else "execute_step", "{}"], job_name=job_name,
        pod_name=job_name, component="run_worker" if step_tags is None else "step_worker",
        user_defined_k8s_config=context.run_k8s_config,
        labels={"dagster/job": run_tags.get("quant/universe", "job"), "dagster/run-id": run_id},
    )
    return ApiClient().sanitize_for_serialization(job)


def _definitions(monkeypatch, tmp_path, **env):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("QUANT_HOME", str(tmp_path / "quant"))
    from quant_assets.definitions import build_definitions

    return build_definitions()


def _retrain_tags(monkeypatch, tmp_path, **env) -> dict:
    defs = _definitions(monkeypatch, tmp_path, **env)
    return dict(next(j for j in defs.jobs if j.name.startswith("retrain_")).tags)


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


def test_under_the_k8s_executor_the_gpu_goes_to_the_training_steps_pods(monkeypatch, tmp_path):
    """QUANT_EXECUTOR=k8s (k8s_job_executor: every step its own Job): the run's pod only orchestrates (no GPU); the
    search's parts and the folds ask for the GPU on their own pods; other steps do not."""
    import dagster as dg
    import kubernetes_validate
    from dagster_k8s import k8s_job_executor

    from quant_assets.executor import ExecutorSettingsError, executor_from_env, k8s_config

    assert executor_from_env({"QUANT_EXECUTOR": "k8s"}) is k8s_job_executor
    with pytest.raises(ExecutorSettingsError, match="QUANT_GPU_NODE_SELECTOR='accelerator': a node label as key=value"):
        k8s_config({"QUANT_TRAINING_GPU": "1", "QUANT_GPU_NODE_SELECTOR": "accelerator"})
    defs = _definitions(monkeypatch, tmp_path, QUANT_EXECUTOR="k8s", QUANT_TRAINING_GPU="1")
    job = next(j for j in defs.jobs if j.name.startswith("retrain_"))
    universe = job.tags["quant/universe"]
    run_pod = _run_job_manifest(dict(job.tags))
    kubernetes_validate.validate(run_pod, K8S_VERSION, strict=True)
    assert "nvidia.com/gpu" not in run_pod["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    graph = defs.resolve_assets_def(dg.AssetKey([universe, "trained_parameters"])).node_def
    ops = {n.name: n.definition for n in graph.nodes}
    for name, wants_gpu in (("search_part", True), ("combine_search", True), ("plan_search", False)):
        step_pod = _run_job_manifest(dict(job.tags), step_tags=dict(ops[name].tags))
        kubernetes_validate.validate(step_pod, K8S_VERSION, strict=True)
        spec = step_pod["spec"]["template"]["spec"]
        limits = spec["containers"][0]["resources"]["limits"]
        assert ("nvidia.com/gpu" in limits) == wants_gpu, name
        assert (spec.get("nodeSelector") == {"accelerator": "nvidia"}) == wants_gpu, name
