"""The same retrain on 1 and on 2 Celery workers (issue 20): wall time of each run, the ratio, and Celery's
overhead per step.

    .venv/bin/python benchmarks/bench_celery.py [--repeats 1] [--concurrency 1] [--budget N] [--search-steps K]

Needs the local PostgreSQL (tests/conftest.py's server) and redis-server (started here on a free port, as the
tests start it: tests/celery_cluster.py). Each worker count gets a fresh instance, store, broker and candle
backfill, then one warm-up run (the workers' first step imports JAX and compiles) and `--repeats` timed runs of
the test registry's universe (tests/test_platform.py: two markets, optuna, 2 walk-forward folds).

Printed per worker count: run wall time (`dagster job execute`, start to exit), and per step the queue wait
(engine event "Submitting celery task" -> the worker's "Executing steps ... in celery worker") and the step's
own time (STEP_START -> STEP_SUCCESS); overhead per step = mean queue wait + the worker's set-up before
STEP_START. The ratio is the 1-worker time over the 2-worker time. On this 2-core machine the two workers share
the same cores as the orchestrator, so the ratio says how much of the retrain's steps run side by side (the
training step and the walk-forward's fold steps, as the `training` pool allows), not what a second machine would
add. `--budget N --search-steps K` give the search N Optuna trials in K steps (workers sharing one study in the
store's PostgreSQL), so the search itself can spread over the workers.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import dagster as dg  # noqa: E402
from celery_cluster import CeleryCluster, backfill_candles, latest_week, redis_server  # noqa: E402
from conftest import POSTGRES_ADMIN_URL, PostgresServer  # noqa: E402
from test_platform import REGISTRY, U  # noqa: E402

JOB = f"retrain_{U}"


def step_times(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, float]]:
    """{step: {submitted, on_worker, started, finished}} (unix seconds) from the run's event log."""
    out: dict[str, dict[str, float]] = {}
    for record in instance.get_records_for_run(run_id).records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        t = out.setdefault(event.step_key, {})
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT:
            if (entry.message or "").startswith("Submitting celery task"):
                t.setdefault("submitted", entry.timestamp)
            elif "in celery worker" in (entry.message or ""):
                t.setdefault("on_worker", entry.timestamp)
        elif event.event_type == dg.DagsterEventType.STEP_START:
            t.setdefault("started", entry.timestamp)
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            t["finished"] = entry.timestamp
    return out


def spans(steps: list[dict], a: str, b: str) -> list[float]:
    """Seconds from event a to event b of every step of every run that has both."""
    return [t[b] - t[a] for s in steps for t in s.values() if {a, b} <= t.keys()]


def run_once(cluster: CeleryCluster, week: str, label: str, run_config: dict | None) -> tuple[float, dict]:
    t0 = time.perf_counter()
    proc = cluster.launch(JOB, week, label, run_config=run_config)
    if proc.wait(timeout=1800) != 0:
        raise SystemExit(f"{label} failed:\n{(cluster.logs / f'{label}.log').read_text()[-4000:]}")
    wall = time.perf_counter() - t0
    with cluster.instance() as instance:
        run = instance.get_run_records(dg.RunsFilter(job_name=JOB), limit=1)[0].dagster_run
        return wall, step_times(instance, run.run_id)


def bench(workers: int, concurrency: int, repeats: int, pg: PostgresServer,
          run_config: dict | None) -> tuple[list[float], list[dict]]:
    dagster_db, store_db = pg.create_database(), pg.create_database()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_path = Path(tmp)
            (tmp_path / "logs").mkdir()
            with redis_server(tmp_path / "logs") as broker:
                cluster = CeleryCluster(tmp_path, dagster_db, store_db, REGISTRY, broker)
                try:
                    week = latest_week(Path(cluster.env["QUANT_REGISTRY"]), U)
                    for i in range(workers):
                        cluster.start_worker(f"w{i + 1}", concurrency)
                    backfill_candles(cluster, week)
                    cluster.wait_ready()
                    run_once(cluster, week, "warmup", run_config)
                    walls, steps = [], []
                    for r in range(repeats):
                        wall, t = run_once(cluster, week, f"run{r}", run_config)
                        walls.append(wall)
                        steps.append(t)
                    return walls, steps
                finally:
                    cluster.close()
    finally:
        pg.drop_database(dagster_db)
        pg.drop_database(store_db)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--concurrency", type=int, default=1, help="steps each worker runs at once")
    ap.add_argument("--budget", type=int, help="Optuna trials of the week's search (default: the registry's)")
    ap.add_argument("--search-steps", type=int, help="steps the search is cut into (workers sharing one study)")
    args = ap.parse_args()
    search = {k: v for k, v in (("budget", args.budget), ("search_steps", args.search_steps)) if v}
    run_config = {"ops": {f"{U}__trained_parameters": {"config": search}}} if search else None
    pg = PostgresServer(POSTGRES_ADMIN_URL)
    if pg.unavailable:
        raise SystemExit(pg.unavailable)
    results = {}
    for n in (1, 2):
        walls, steps = bench(n, args.concurrency, args.repeats, pg, run_config)
        results[n] = statistics.median(walls)
        waits, setup, work = (spans(steps, a, b) for a, b in (("submitted", "on_worker"), ("on_worker", "started"),
                                                               ("started", "finished")))
        print(f"{n} worker(s): retrain {results[n]:.1f} s (median of {len(walls)}); {len(work)} steps: "
              f"queue wait {statistics.mean(waits):.2f} s + worker set-up {statistics.mean(setup):.2f} s per step "
              f"(overhead), step work {statistics.mean(work):.2f} s mean")
    print(f"ratio 1 worker / 2 workers: {results[1] / results[2]:.2f}")
    pg.dispose()


if __name__ == "__main__":
    main()
