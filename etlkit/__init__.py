"""etlkit: dataframe ETL pipelines as Python classes.

    import etlkit as ek

    class MonthlyReport(ek.Pipeline):
        billing = CsvSource("billing/{ds}/*.csv", schema=RawBilling)
        monthly = AddMonth(billing)
        report = ParquetSink("reports/{ds}/monthly.parquet", monthly)

Names are loaded on first use, so importing etlkit (and `etlkit --help`) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from etlkit.engine.execution import Event, NodeStats, RunResult
    from etlkit.errors import (
        AirflowImportError,
        CommandError,
        CommandTimeoutError,
        ConfigError,
        ConnectionNotFoundError,
        ConnectorError,
        ConnectorNotFoundError,
        DataValidationError,
        EtlkitError,
        MissingDependencyError,
        NodeError,
        NodeTimeoutError,
        NotificationError,
        PermanentError,
        PipelineDefinitionError,
        PipelineNotFoundError,
        QueryError,
        RunCancelledError,
        RunExistsError,
        RunTimeoutError,
        SchedulerError,
        SensorTimeoutError,
        StagingError,
        StoreError,
        TransientError,
    )
    from etlkit.model.commands import Command
    from etlkit.model.nodes import (
        Context,
        Lazy,
        Sensor,
        Sink,
        Source,
        Sql,
        Task,
        Transform,
        WriteResult,
    )
    from etlkit.model.sensors import FileSensor, RunSensor
    from etlkit.runs.pipeline import Pipeline
    from etlkit.settings.config import Settings, load_settings
    from etlkit.storage.querying import connect, query

__all__ = [
    "AirflowImportError",
    "Command",
    "CommandError",
    "CommandTimeoutError",
    "ConfigError",
    "ConnectionNotFoundError",
    "ConnectorError",
    "ConnectorNotFoundError",
    "Context",
    "DataValidationError",
    "EtlkitError",
    "Event",
    "FileSensor",
    "Lazy",
    "MissingDependencyError",
    "NodeError",
    "NodeStats",
    "NodeTimeoutError",
    "NotificationError",
    "PermanentError",
    "Pipeline",
    "PipelineDefinitionError",
    "PipelineNotFoundError",
    "QueryError",
    "RunCancelledError",
    "RunExistsError",
    "RunResult",
    "RunSensor",
    "RunTimeoutError",
    "SchedulerError",
    "Sensor",
    "SensorTimeoutError",
    "Settings",
    "Sink",
    "Source",
    "Sql",
    "StagingError",
    "StoreError",
    "Task",
    "Transform",
    "TransientError",
    "WriteResult",
    "connect",
    "load_settings",
    "query",
]

_MODULES: dict[str, str] = {
    "Command": "model.commands",
    "Settings": "settings.config",
    "load_settings": "settings.config",
    "Event": "engine.execution",
    "NodeStats": "engine.execution",
    "RunResult": "engine.execution",
    "Context": "model.nodes",
    "Lazy": "model.nodes",
    "Sensor": "model.nodes",
    "Sink": "model.nodes",
    "Task": "model.nodes",
    "Source": "model.nodes",
    "Sql": "model.nodes",
    "Transform": "model.nodes",
    "WriteResult": "model.nodes",
    "Pipeline": "runs.pipeline",
    "connect": "storage.querying",
    "query": "storage.querying",
    "FileSensor": "model.sensors",
    "RunSensor": "model.sensors",
}


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(f"etlkit.{_MODULES.get(name, 'errors')}")
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'etlkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
