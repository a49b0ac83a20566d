"""Deployment settings read when the definitions load.

QUANT_AUTOMATION decides whether what launches runs on its own (the ingest and retrain schedules, the
new-candles sensor) starts RUNNING. Off by default: the embedded demo home has the demo's candles only, so
schedules firing there would fill a newcomer's UI with runs that fail for want of data. A deployment sets
QUANT_AUTOMATION=on (deploy/: compose, Helm, local run script). Toggling one in the UI overrides its default
either way. Sensors that only follow runs a person started stay on everywhere.
"""

from __future__ import annotations

import os

import dagster as dg

AUTOMATION_ENV = "QUANT_AUTOMATION"
_ON, _OFF = {"on", "1", "true", "yes"}, {"off", "0", "false", "no", ""}


def automation_enabled() -> bool:
    """Whether $QUANT_AUTOMATION turns the schedules and the new-candles sensor on; a typo fails the load rather
    than silently leaving a deployment without its retrains."""
    value = os.environ.get(AUTOMATION_ENV, "").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{AUTOMATION_ENV}={os.environ[AUTOMATION_ENV]!r}: use 'on' (schedules and the new-candles "
                     "sensor start running, for a deployment) or 'off' (the default: they start stopped)")


def schedule_status() -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.RUNNING if automation_enabled() else dg.DefaultScheduleStatus.STOPPED


def sensor_status() -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if automation_enabled() else dg.DefaultSensorStatus.STOPPED
