"""The exit codes the README documents, by error class (`exit_code`)."""

from __future__ import annotations

from etlkit.errors import (
    AirflowImportError,
    ConfigError,
    ConnectorError,
    DataValidationError,
    EtlkitError,
    NodeError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    QueryError,
    RunCancelledError,
    StoreError,
)

#: Exit codes by error class (the first matching class in this order wins).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, 2),
    (PipelineNotFoundError, 3),
    (PipelineDefinitionError, 3),
    (AirflowImportError, 3),
    (DataValidationError, 4),
    (ConnectorError, 5),
    (NodeError, 1),
    (RunCancelledError, 130),
    (StoreError, 6),
    (QueryError, 7),
    (EtlkitError, 1),
)


def exit_code(exc: BaseException) -> int:
    """The exit code for an error (1 for anything unexpected).

    A `NodeError` wrapping an etlkit error (a connector's, say) exits with the wrapped one's code.
    """
    if isinstance(exc, NodeError) and isinstance(exc.__cause__, EtlkitError):
        exc = exc.__cause__
    for cls, code in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return 1


#: `import-airflow` mapped the DAG, with items to review (listed in its report).
EXIT_REVIEW = 8
