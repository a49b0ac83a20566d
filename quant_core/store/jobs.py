"""Training jobs: recorded before a run trains, closed after it, and reconciled when the run died without closing.

Why reconciliation: a process killed with SIGKILL (kill -9, the OOM killer, a lost node) cannot write its outcome,
so its row stayed `running` (or `trained` with no configuration) forever and every reader took it for live.
Whether the run behind an open row is alive is judged from evidence, strongest first:

1. its orchestrator run ended (`run_ended`, e.g. Dagster's run status SUCCESS, FAILURE or CANCELED);
2. it is `running` on this host and its recorded process is gone (no such pid, or a zombie);
3. its heartbeat is older than `stale_after`: a running job beats from a thread of its training process, a
   trained one from its run's later steps (`heartbeat`). This covers other hosts and reused pids.

Anything else is left alone. The judgement is made outside any write lock (asking an orchestrator may be slow);
the write lands only on rows still exactly as judged (same status, same heartbeat), so a job that beats meanwhile
is never touched, and reconciling again finds nothing to do.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy import Connection

from quant_core.store.models import jobs_table
from quant_core.store.records import TrainingJobRecord, as_utc, strict_json

log = logging.getLogger(__name__)

#: Seconds between two heartbeats of an open job.
HEARTBEAT_EVERY = 60.0
#: A job whose last heartbeat is older than this is taken for dead (30 missed beats: long pauses are no death).
STALE_AFTER = timedelta(minutes=30)
OPEN_STATUSES = ("running", "trained")
#: How a reconciled job's `error` starts: it died while training / after training, before storing its version.
ABANDONED_DURING = "abandoned during training: "
ABANDONED_AFTER = "abandoned after training: "
#: Says why a run ended (e.g. "its Dagster run X ended with status FAILURE"), or None when it has not or is unknown.
RunEnded = Callable[[str], str | None]


def this_host() -> str:
    """The host name recorded with a job: a pid is only checked on the host it was recorded on."""
    return socket.gethostname()


def process_gone(pid: int) -> bool:
    """Whether no live process `pid` exists here (a zombie has exited: only its parent has not reaped it)."""
    if pid <= 0:
        return False  # not a process id (0 and negatives address process groups)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # it exists, under another user
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X")


def _fmt(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def abandoned_reason(job: TrainingJobRecord, *, now: datetime, stale_after: timedelta = STALE_AFTER,
                     run_ended: RunEnded | None = None, host: str | None = None) -> str | None:
    """Why the open `job` is no longer alive, or None if nothing says so (see the module docstring)."""
    if job.status not in OPEN_STATUSES or job.configuration_id is not None:
        return None
    running = job.status == "running"
    prefix = ABANDONED_DURING if running else ABANDONED_AFTER
    if job.orchestrator_run_id and run_ended is not None:
        ended = run_ended(job.orchestrator_run_id)
        if ended:
            return prefix + ended + (" while the job was still marked running" if running
                                     else " before it stored a configuration")
    beat = job.heartbeat_at or job.started_at
    if running and job.pid is not None and job.host == (host or this_host()) and process_gone(job.pid):
        return prefix + f"its process {job.pid} on {job.host} is gone (killed or crashed); last heartbeat {_fmt(beat)}"
    if now - beat > stale_after:
        who = f" from {job.host} pid {job.pid}" if job.host else ""
        since = "since" if job.heartbeat_at else "since it started at"
        limit = f"{stale_after.total_seconds() / 60:g} min"
        return prefix + f"no heartbeat{who} {since} {_fmt(beat)} (more than {limit} before {_fmt(now)})"
    return None


def _nonempty(value: object, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
    return value


class TrainingJobs:
    """Mixed into ConfigurationStore (which provides `_transaction`)."""

    def _transaction(self, *, write: bool) -> AbstractContextManager[Connection]:  # pragma: no cover - provided
        raise NotImplementedError

    def record_job_start(self, *, universe_key: str, method: str, settings: dict, orchestrator_run_id: str | None,
                         pid: int | None = None, host: str | None = None) -> int:
        """Record a training run as 'running' before it starts, so failed runs leave a trace too. `pid` and `host`
        (default: this process) name the process whose death makes the job abandoned."""
        now = datetime.now(UTC)
        row = {
            "universe_key": _nonempty(universe_key, "universe_key"),
            "method": _nonempty(method, "method"),
            "settings": strict_json(dict(settings), "settings"),
            "orchestrator_run_id": orchestrator_run_id,
            "status": "running",
            "started_at": now,
            "heartbeat_at": now,
            "host": host if host is not None else this_host(),
            "pid": pid if pid is not None else os.getpid(),
        }
        with self._transaction(write=True) as conn:
            job_id = conn.execute(sa.insert(jobs_table).values(**row)).inserted_primary_key[0]
        return int(job_id)

    def record_job_end(self, job_id: int, *, status: str, error: str | None = None,
                       configuration_id: int | None = None) -> None:
        """Close a training run with its outcome; LookupError for an unknown job id. A job reconciled as abandoned
        that turns out to have lived (it finishes after all) gets its real outcome."""
        j = jobs_table
        update = sa.update(j).where(j.c.id == job_id).values(
            status=_nonempty(status, "status"), error=error, configuration_id=configuration_id,
            finished_at=datetime.now(UTC))
        with self._transaction(write=True) as conn:
            if conn.execute(update).rowcount == 0:
                raise LookupError(f"no training job with id {job_id}; record_job_start returns the id to use")

    def list_training_jobs(self, *, universe_key: str | None = None) -> list[TrainingJobRecord]:
        """Recorded training runs ordered by id, optionally for one universe."""
        j = jobs_table
        query = sa.select(j).order_by(j.c.id)
        if universe_key is not None:
            query = query.where(j.c.universe_key == universe_key)
        with self._transaction(write=False) as conn:
            rows = conn.execute(query).mappings().all()
        return [TrainingJobRecord(**dict(r)) for r in rows]

    # -- liveness ---------------------------------------------------------------------------------

    def beat_job(self, job_id: int) -> bool:
        """Refresh a running job's heartbeat; False once it is no longer running (closed or reconciled)."""
        j = jobs_table
        with self._transaction(write=True) as conn:
            return conn.execute(sa.update(j).where(j.c.id == job_id, j.c.status == "running")
                                .values(heartbeat_at=datetime.now(UTC))).rowcount > 0

    def beat_run(self, run_id: str) -> int:
        """Refresh the heartbeat of the run's trained jobs that await their configuration (the run's later steps
        are what keeps them alive); returns how many."""
        j = jobs_table
        with self._transaction(write=True) as conn:
            return conn.execute(sa.update(j).where(j.c.orchestrator_run_id == run_id, j.c.status == "trained",
                                                   j.c.configuration_id.is_(None))
                                .values(heartbeat_at=datetime.now(UTC))).rowcount

    @contextmanager
    def heartbeat(self, job_id: int | None = None, *, run_id: str | None = None,
                  every: float = HEARTBEAT_EVERY) -> Iterator[None]:
        """Beat the running job `job_id` (or the trained jobs of `run_id`) now and every `every` seconds from a
        daemon thread while the block runs. A failed beat is logged, not raised: training goes on."""
        if (job_id is None) == (run_id is None):
            raise ValueError("heartbeat: pass exactly one of job_id and run_id")
        if not every > 0:
            raise ValueError(f"heartbeat: every must be > 0 seconds, got {every!r}")
        stop = threading.Event()

        def beat() -> None:
            while True:
                try:
                    self.beat_job(job_id) if job_id is not None else self.beat_run(str(run_id))
                except Exception as exc:  # the database may be briefly unreachable; the next beat retries
                    log.warning("training job heartbeat failed (%s: %s)", type(exc).__name__, exc)
                if stop.wait(every):
                    return

        thread = threading.Thread(target=beat, name=f"job-heartbeat-{job_id or run_id}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def reconcile_jobs(self, *, universe_key: str | None = None, run_ended: RunEnded | None = None,
                       stale_after: timedelta = STALE_AFTER, now: datetime | None = None) -> list[TrainingJobRecord]:
        """Mark the open jobs (of one universe, or all) whose run is no longer alive `failed`, with the reason in
        `error`; returns them as now stored. Idempotent, and a job that changed since it was read (it beat, or
        closed) is left alone. `run_ended` asks the orchestrator about a job's run (see abandoned_reason)."""
        if stale_after < timedelta(0):
            raise ValueError(f"stale_after must be >= 0, got {stale_after}")
        now = as_utc(now, "now") if now is not None else datetime.now(UTC)
        j = jobs_table
        query = sa.select(j).where(j.c.status.in_(OPEN_STATUSES), j.c.configuration_id.is_(None)).order_by(j.c.id)
        if universe_key is not None:
            query = query.where(j.c.universe_key == universe_key)
        with self._transaction(write=False) as conn:
            open_jobs = [TrainingJobRecord(**dict(r)) for r in conn.execute(query).mappings().all()]
        host = this_host()
        verdicts = [(job, why) for job in open_jobs
                    if (why := abandoned_reason(job, now=now, stale_after=stale_after, run_ended=run_ended,
                                                host=host)) is not None]
        if not verdicts:
            return []
        failed: list[int] = []
        with self._transaction(write=True) as conn:
            for job, why in verdicts:
                still_as_judged = (j.c.id == job.id, j.c.status == job.status, j.c.configuration_id.is_(None),
                                   j.c.heartbeat_at.is_not_distinct_from(job.heartbeat_at))
                done = conn.execute(sa.update(j).where(*still_as_judged)
                                    .values(status="failed", error=why, finished_at=now)).rowcount
                if done:
                    failed.append(job.id)
            rows = conn.execute(sa.select(j).where(j.c.id.in_(failed)).order_by(j.c.id)).mappings().all()
        for r in rows:
            log.warning("training job %s (%s) reconciled as failed: %s", r["id"], r["universe_key"], r["error"])
        return [TrainingJobRecord(**dict(r)) for r in rows]
