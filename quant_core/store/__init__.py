"""The configuration store: trained configurations, lifecycle events and training jobs.

SQLAlchemy + Alembic (migrations in the checkout's `sql/` folder); SQLite by default, PostgreSQL via
$QUANT_DATABASE_URL. Start with `ConfigurationStore()`; see `repository` for the write guarantees.
"""

from quant_core.store.database import DATABASE_URL_ENV, redact_url, resolve_database_url
from quant_core.store.records import (
    Comparison,
    ForwardRecord,
    LifecycleEventRecord,
    NewConfiguration,
    StoredConfiguration,
    TimelineEvent,
    TrainingJobRecord,
)
from quant_core.store.repository import ConfigurationStore

__all__ = [
    "Comparison",
    "ForwardRecord",
    "TimelineEvent",
    "DATABASE_URL_ENV",
    "ConfigurationStore",
    "LifecycleEventRecord",
    "NewConfiguration",
    "StoredConfiguration",
    "TrainingJobRecord",
    "redact_url",
    "resolve_database_url",
]
