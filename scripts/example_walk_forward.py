"""Regenerate docs/examples/walk_forward_momentum: a walk-forward run of the momentum pool over
BTC/ETH/USDC on the shared real daily prices, 2022-2024 (3 months train, 1 week gap, 1 month test,
rolled monthly; each fold trained by Optuna TPE).

    .venv/bin/python scripts/example_walk_forward.py [--prices ../shared/data/real_daily_prices.csv]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from quant_core.data.panel import panel_from_long_prices
from quant_core.jsonsafe import json_safe
from quant_core.plots import walk_forward_plot
from quant_core.runspec import load_run_spec
from quant_core.validate.folds import WalkForwardSettings
from quant_core.validate.walk_forward import walk_forward

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "examples" / "walk_forward_momentum"

SPEC = {
    "rule": "momentum", "tokens": ["BTC", "ETH", "USDC"],
    "startDateString": "2022-01-01", "endDateString": "2024-12-29",
    "chunk_period": 1440, "weight_interpolation_period": 1440, "max_memory_days": 60,
    "bout_offset": 7 * 1440,
    "optimisation_settings": {
        "method": "optuna", "val_fraction": 0.0,
        "optuna_settings": {"n_trials": 48, "n_jobs": 8, "n_startup_trials": 16, "expand_around": False,
                            "parameter_config": {"memory_days": {"low": 2, "high": 60, "log_scale": True},
                                                 "k_per_day": {"low": 0.5, "high": 200, "log_scale": True}}},
    },
}
SETTINGS = WalkForwardSettings(train_days=91, gap_days=7, test_days=30, step_days=30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prices", default=str(ROOT.parent / "shared" / "data" / "real_daily_prices.csv"))
    args = ap.parse_args()
    spec = load_run_spec(SPEC)
    panel = panel_from_long_prices(args.prices, spec.tokens)
    began = time.perf_counter()
    report = walk_forward(panel, spec, SETTINGS, seed=0, log=print)
    seconds = time.perf_counter() - began
    OUT.mkdir(parents=True, exist_ok=True)
    payload = {"spec": SPEC, "walk_forward": SETTINGS.model_dump(), "seconds": round(seconds, 1),
               "report": report.to_dict()}
    (OUT / "report.json").write_text(json.dumps(json_safe(payload), indent=1, allow_nan=False))
    (OUT / "walk_forward.png").write_bytes(walk_forward_plot(report))
    print(f"{len(report.folds)} folds in {seconds:.0f} s: OOS Sharpe {report.oos_sharpe:.3f} "
          f"(HODL {report.oos_benchmark_sharpe:.3f}, uniform {report.other_benchmarks['uniform']['sharpe']:.3f}), "
          f"sample {report.sample_size} days, OOS/IS {report.oos_is_ratio:.3f}")
    print(json.dumps({k: v for k, v in report.significance.items() if not isinstance(v, list)}, indent=1))


if __name__ == "__main__":
    main()
