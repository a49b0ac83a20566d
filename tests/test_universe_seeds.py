"""Issue 18 item 18: each universe and retrain week searches with its own seed.

Every universe used to search with initial_random_key 0, so the same random candidates won on different
markets. The seed now comes from a stable hash of the universe and the week (the same in every process,
unlike Python's salted hash()), unless the registry entry or the launchpad sets one, which is honoured.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import yaml

from quant_assets.defs.training.common import TrainConfig, week_spec
from quant_core.retrain import explicit_seed, week_seed
from quant_core.universe import Registry, load_registry

REGISTRY = Path(__file__).resolve().parents[1] / "quant_assets" / "registry.yaml"
CCXT_REGISTRY = Path(__file__).resolve().parents[1] / "deploy" / "registry.ccxt.yaml"
WEEK_END = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday: the end of a retrain week
SAME_CANDIDATES = ("sweep_binance_btc_usdt_1h", "sweep_binance_eth_usdt_5m", "sweep_kraken_btc_usdt_1h")


def test_week_seed_is_stable_across_processes_and_differs_by_universe_and_week():
    here = week_seed("sweep_binance_btc_usdt_1h", WEEK_END)
    code = ("from datetime import UTC, datetime; from quant_core.retrain import week_seed; "
            "print(week_seed('sweep_binance_btc_usdt_1h', datetime(2025, 3, 3, tzinfo=UTC)))")
    for salt in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                             env={**os.environ, "PYTHONHASHSEED": salt})
        assert int(out.stdout) == here
    assert 0 <= here < 2**31  # numpy, optuna and jax all take it
    seeds = {week_seed(u, WEEK_END + timedelta(weeks=w)) for u in SAME_CANDIDATES for w in range(4)}
    assert len(seeds) == 12


def test_shipped_universes_search_with_their_own_seed_each_week():
    registry = load_registry(REGISTRY)
    for name in SAME_CANDIDATES:
        assert not explicit_seed(registry.universe(name).spec), f"{name}: the shipped registry pins the seed"
    seeds = {}
    for name in SAME_CANDIDATES:
        spec = week_spec(registry.universe(name).spec, name, WEEK_END, TrainConfig())
        seeds[name] = spec.optimisation_settings.initial_random_key
        assert seeds[name] == week_seed(name, WEEK_END)
        assert (spec.end_test or spec.end) == WEEK_END  # the window still ends with the week
        later = week_spec(registry.universe(name).spec, name, WEEK_END + timedelta(weeks=1), None)
        assert later.optimisation_settings.initial_random_key == week_seed(name, WEEK_END + timedelta(weeks=1))
    assert len(set(seeds.values())) == len(SAME_CANDIDATES)
    for universe in load_registry(CCXT_REGISTRY).universes:
        assert not explicit_seed(universe.spec), f"{universe.name}: deploy/registry.ccxt.yaml pins the seed"


def test_an_explicit_seed_in_the_registry_or_the_launchpad_is_honoured():
    data = yaml.safe_load(REGISTRY.read_text())
    entry = next(u for u in data["universes"] if u["name"] == "sweep_binance_btc_usdt_1h")
    entry["spec"] = {**entry["spec"], "optimisation_settings": {**entry["spec"]["optimisation_settings"],
                                                                "initial_random_key": 7}}
    universe = Registry.model_validate(data).universe("sweep_binance_btc_usdt_1h")
    assert explicit_seed(universe.spec)
    for weeks in range(3):
        end = WEEK_END + timedelta(weeks=weeks)
        assert week_spec(universe.spec, universe.name, end, TrainConfig()).optimisation_settings.initial_random_key == 7
    base = load_registry(REGISTRY).universe("sweep_kraken_btc_usdt_1h").spec
    spec = week_spec(base, "sweep_kraken_btc_usdt_1h", WEEK_END, TrainConfig(seed=5, budget=8))
    assert spec.optimisation_settings.initial_random_key == 5
    assert spec.optimisation_settings.search_settings.n_samples == 8


def test_the_trainer_searches_with_and_records_the_week_seed(monkeypatch):
    """What the retrain asset does with the week's spec: train() searches with its seed and reports it as
    TrainedParameters.seed, which build_configuration stores on the version."""
    import quant_core.train.grid as grid
    import quant_core.train.trainer as trainer

    name = "sweep_binance_eth_usdt_5m"
    spec = week_spec(load_registry(REGISTRY).universe(name).spec, name, WEEK_END, TrainConfig())
    used = {}

    def fake_grid(problem, spec, *, seed=None, n_samples=None, log=None):
        used["seed"] = seed
        return SimpleNamespace(best_params={"rr_ratio": [2.0]}, best_value=1.0, n_evaluations=1, seconds=0.1,
                               table=[], candidates=[{"rr_ratio": [2.0]}], top=[], evaluations_per_second=10.0,
                               batch_size=1)

    stub = SimpleNamespace(differentiable=False, validate_data=lambda *a: None, problem=lambda *a: None,
                           user_params=lambda p: p)
    monkeypatch.setattr(trainer, "tunable_for", lambda s: stub)
    monkeypatch.setattr(grid, "run_grid", fake_grid)
    trained = trainer.train(None, spec)
    assert used["seed"] == trained.seed == week_seed(name, WEEK_END)
