"""The one exception tree of etlkit.

```text
EtlkitError
├── ConfigError(ValueError)                  bad or unknown key; names the key and its source
├── PipelineDefinitionError                  cycle, missing input, duplicate name, schema mismatch
├── PipelineNotFoundError(LookupError)       no pipeline by that name, path or module
├── ConnectorError                           a connector could not read or write
│   ├── ConnectorNotFoundError(KeyError)
│   └── MissingDependencyError(ImportError)  says which extra to install
├── NodeError                                user code failed: .pipeline .node .run_id .chunk
│   └── NodeTimeoutError                     the node ran past its timeout
├── RunTimeoutError                          the run ran past its pipeline's timeout
├── RunCancelledError                        the run was cancelled (another node failed, Ctrl-C)
├── DataValidationError                      Pandera failures: bounded summary
├── AirflowImportError                       a DAG file cannot be imported: names file and line
└── StagingError · QueryError · StoreError · SchedulerError
TransientError (mixin)                       retryable: network, throttling, lock contention
PermanentError (mixin)                       never retried, whatever the retries setting
```

Every exception stores its constructor arguments so it pickles across processes.
`quoted` writes the names a message lists as people read them (`'a', 'b' and 'c'`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class EtlkitError(Exception):
    """Base of every error etlkit raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[EtlkitError], args: tuple[Any, ...], state: dict[str, Any]) -> EtlkitError:
    exc = cls.__new__(cls)
    Exception.__init__(exc, *args)
    exc.__dict__.update(state)
    return exc


class TransientError(Exception):
    """Mixin marking an error as retryable (network, throttling, lock contention)."""


class PermanentError(Exception):
    """Mixin marking an error as not worth retrying (bad configuration, bad data, a bug)."""


class ConfigError(EtlkitError, ValueError):
    """A configuration value is missing, unknown or malformed."""


class PipelineDefinitionError(EtlkitError):
    """A pipeline's graph is invalid: cycle, unknown input, duplicate name, schema mismatch.

    `problems` lists every problem found, so `etlkit validate` can report them all at once.
    """

    def __init__(self, pipeline: str, problems: list[str]) -> None:
        self.pipeline = pipeline
        self.problems = list(problems)
        if len(self.problems) == 1:
            message = f"Pipeline '{pipeline}' is invalid: {self.problems[0]}"
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            message = f"Pipeline '{pipeline}' is invalid ({len(self.problems)} problems):\n{lines}"
        super().__init__(message)


class PipelineNotFoundError(EtlkitError, LookupError):
    """No pipeline matches the given name, file path or module path."""


class ConnectorError(EtlkitError):
    """A connector failed to read or write; the message names the file, row or column."""


class ConnectorNotFoundError(ConnectorError, KeyError):
    """No connector is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(ConnectorError, ImportError):
    """An optional dependency is not installed; the message gives the install line."""


class NodeError(EtlkitError):
    """A node's own code failed. Carries where: pipeline, node, run id and chunk index."""

    def __init__(
        self,
        message: str,
        *,
        pipeline: str,
        node: str,
        run_id: str,
        chunk: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.node = node
        self.run_id = run_id
        self.chunk = chunk
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, self.__dict__))


class NodeTimeoutError(NodeError):
    """A node ran longer than its timeout."""


class RunTimeoutError(EtlkitError):
    """A run ran longer than its pipeline's timeout."""


class RunCancelledError(EtlkitError):
    """The run was cancelled before this node finished (another node failed, or a signal)."""


class DataValidationError(EtlkitError):
    """Data broke a node's schema. The message is a bounded summary of the failed checks."""


class StagingError(EtlkitError):
    """Staged output could not be written, committed or read."""


class QueryError(EtlkitError):
    """A query over staged data failed."""


class StoreError(EtlkitError):
    """The run store could not be read or written."""


class SchedulerError(EtlkitError):
    """The scheduler could not plan or launch a run."""


class AirflowImportError(EtlkitError):
    """A DAG file cannot be imported (`etlkit import-airflow`): a syntax error, a cycle, a
    dependency naming no task, ...; the message names the DAG file and the line."""

    def __init__(self, path: str, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        self.problem = problem
        super().__init__(f"DAG file {path}, line {line}: {problem}")


def quoted(names: Iterable[object], *, none: str = "none") -> str:
    """Names for a message, quoted and joined: `'a'`, `'a' and 'b'`, `'a', 'b' and 'c'`.

    `none` is the text for no names at all.
    """
    items = [f"'{name}'" for name in names]
    if not items:
        return none
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} and {items[-1]}"
