"""A retrain's walk-forward folds run as separate Dagster steps (so an executor can place them on different workers):
one retrain week of a small synthetic strategy universe is materialised, its event log has one `run_fold` step
per fold between `plan_folds` and `combine_folds`, and the stored report is the in-process `walk_forward` one."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import numpy as np
import pytest
from test_strategy_platform import TODAY, U, land_lookback, make_platform

from quant_assets.defs.training.common import TrainConfig, week_spec
from quant_assets.partitions import latest_retrain_week
from quant_core.validate.folds import make_folds
from quant_core.validate.walk_forward import walk_forward, walk_forward_span

REPORT = [U, "walk_forward_report"]


@pytest.fixture
def platform(tmp_path, monkeypatch, sqlite_url):
    monkeypatch.setenv("QUANT_DATABASE_URL", sqlite_url)
    return make_platform(tmp_path, monkeypatch)


@pytest.mark.parametrize(("asset", "ops"), [("walk_forward_report", ("plan_folds", "run_fold", "combine_folds")),
                                           ("trained_parameters", ("plan_search", "search_part", "combine_search"))])
def test_graph_takes_the_launchpad_config_as_the_single_step_asset_did(platform, asset, ops):
    _, defs = platform
    job = defs.resolve_implicit_global_asset_job_def()
    node = f"{U}__{asset}"
    run_config = {"ops": {node: {"config": {"metric": "daily_var_95pct", "seed": 3, "budget": 2}}}}
    dg.validate_run_config(job, run_config)
    from dagster._core.system_config.objects import ResolvedRunConfig  # what each op of the graph receives

    resolved = ResolvedRunConfig.build(job, run_config).ops
    for op in ops:
        assert resolved[f"{node}.{op}"].config == {"method": None, "budget": 2, "seed": 3, "metric": "daily_var_95%",
                                                   "search_steps": None}
    with pytest.raises(dg.DagsterInvalidConfigError, match="metric not in enum type Metric got sharp"):
        dg.validate_run_config(job, {"ops": {node: {"config": {"metric": "sharp"}}}})
    with pytest.raises(dg.DagsterInvalidConfigError, match="search_steps"):
        dg.validate_run_config(job, {"ops": {node: {"config": {"search_steps": "many"}}}})


@pytest.mark.slow
def test_each_fold_is_its_own_step_and_the_report_is_the_in_process_one(platform):
    registry, defs = platform
    universe = registry.universe(U)
    assets, resources = list(defs.assets), dict(defs.resources)
    with dg.instance_for_test() as instance:
        week = latest_retrain_week(registry, universe, TODAY)
        land_lookback(defs, instance)
        res = dg.materialize(assets, selection=[dg.AssetKey([U, "candles"]), dg.AssetKey(REPORT)],
                             instance=instance, resources=resources, partition_key=week,
                             run_config={"ops": {f"{U}__walk_forward_report": {"config": {"seed": 5}}}})
        assert res.success

        week_end = datetime.fromisoformat(week).replace(tzinfo=UTC) + timedelta(days=7)
        spec = week_spec(universe.spec, U, week_end, TrainConfig(seed=5))
        folds = make_folds(*walk_forward_span(spec), universe.walk_forward)
        assert len(folds) >= 2
        steps = [e.step_key for e in instance.all_logs(res.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)]
        graph = f"{U}__walk_forward_report"
        assert sorted(s for s in steps if s.startswith(graph)) == sorted(
            [f"{graph}.plan_folds", f"{graph}.combine_folds", *(f"{graph}.run_fold[{f.index}]" for f in folds)])
        # each fold step logged its own fold only
        for f in folds:
            step = f"{graph}.run_fold[{f.index}]"
            logs = [e.user_message for e in instance.all_logs(res.run_id) if e.step_key == step]
            assert any(m.startswith(f"fold {f.index}: train") for m in logs)
            assert not any(m.startswith(f"fold {g.index}: ") for m in logs for g in folds if g.index != f.index)
        checks = {c.check_name: c.passed for c in res.get_asset_check_evaluations()}
        assert checks["finite_oos_metrics"] and "oos_thresholds" in checks
        (mat,) = [m for m in res.get_asset_materialization_events() if m.asset_key == dg.AssetKey(REPORT)]
        assert mat.materialization.metadata["report"].value["folds"] == len(folds)

        stored = defs.load_asset_value(REPORT, partition_key=week, instance=instance)
        data = defs.load_asset_value([U, "candles"], partition_key=week, instance=instance)
    expected = walk_forward(data, spec, universe.walk_forward, seed=5)
    np.testing.assert_equal(stored.to_dict(), expected.to_dict())  # the same floats (NaN equal to NaN)
