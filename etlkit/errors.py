"""The one exception tree of etlkit.

```text
EtlkitError
├── ConfigError(ValueError)                  bad or unknown key; names the key and its source
│   └── ConnectionNotFoundError              no connection by that name: .name .known
├── PipelineDefinitionError                  cycle, missing input, duplicate name, schema mismatch
├── PipelineNotFoundError(LookupError)       no pipeline by that name, path or module
├── ConnectorError                           a connector could not read or write
│   ├── ConnectorNotFoundError(KeyError)
│   └── MissingDependencyError(ImportError)  says which extra to install
├── NodeError                                user code failed: .pipeline .node .run_id .chunk
│   └── NodeTimeoutError                     the node ran past its timeout
├── SensorTimeoutError                       a sensor's condition did not hold in time
├── CommandError                             an external command failed: .command .returncode
│   └── CommandTimeoutError                  it ran past its timeout
├── NotificationError                        a notifier could not deliver its message
├── RunTimeoutError                          the run ran past its pipeline's timeout, or its
│                                            Dask cluster had no worker for the grace
├── RunCancelledError                        the run was cancelled (another node failed, Ctrl-C)
├── DataValidationError                      Pandera failures: bounded summary
├── AirflowImportError                       a DAG file cannot be imported: names file and line
├── StoreError                               the run store could not be read or written
│   └── RunExistsError                       run id or scheduled date taken: .existing_run_id
└── StagingError · QueryError · SchedulerError
TransientError (mixin)                       retryable: network, throttling, lock contention
PermanentError (mixin)                       never retried, whatever the retries setting
```

Every exception etlkit raises is defined here (connectors add theirs under `ConnectorError`:
`HttpError`, `PostgresTransientError`, `DatabaseLockedError`, ...), with its context as typed
arguments kept as attributes, set by its constructor and never added after it is raised. Every
exception pickles across processes: `__reduce__` rebuilds it from its message and attributes.

`TransientError` and `PermanentError` are mixins, not `EtlkitError`s, because they say what kind
of failure an error is, not that etlkit raised it: users put them on their own exceptions
(`class BadRequest(MyApiError, ek.PermanentError)`), and etlkit reads them through the
`NodeError` that wraps such an error once, at the node boundary (its `__cause__`): a
`PermanentError` is never retried, whatever the retries setting, and a `TransientError` a
sensor raises counts as "not yet". etlkit's own errors of either kind inherit both
(`HttpRetriesExhaustedError` is a `ConnectorError` and a `TransientError`).

`quoted` writes the names a message lists as people read them (`'a', 'b' and 'c'`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    """Mixin marking an error as retryable (network, throttling, lock contention).

    Not an `EtlkitError`: users mix it into their own exceptions (see the module docstring).
    """


class PermanentError(Exception):
    """Mixin marking an error as not worth retrying (bad configuration, bad data, a bug).

    Not an `EtlkitError`: users mix it into their own exceptions (see the module docstring).
    """


class ConfigError(EtlkitError, ValueError):
    """A configuration value is missing, unknown or malformed."""


class ConnectionNotFoundError(ConfigError):
    """No connection by that name is defined (or none are loaded in this context).

    Attributes:
        name: the name asked for.
        known: the names of the defined connections, sorted.
    """

    def __init__(self, message: str, *, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = sorted(known)
        super().__init__(message)


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


class NodeTimeoutError(NodeError):
    """A node ran longer than its timeout."""


class RunTimeoutError(EtlkitError):
    """A run ran longer than its pipeline's timeout, or waited longer than the grace
    (`DaskExecutor(no_workers_grace=...)`, 60 s) on a Dask cluster without a worker."""


class SensorTimeoutError(EtlkitError):
    """A sensor's condition did not hold within its timeout (and it has no `soft_fail`).

    Attributes:
        sensor: the sensor's node name.
        timeout: the sensor's timeout, in seconds.
        waited_for: what the sensor waited for (its `describe(ctx)`).
    """

    def __init__(self, sensor: str, timeout: float, waited_for: str) -> None:
        self.sensor = sensor
        self.timeout = timeout
        self.waited_for = waited_for
        super().__init__(
            f"sensor '{sensor}' timed out after {timeout:g} s waiting for {waited_for}. "
            "Check that the upstream producer ran, raise the sensor's timeout, or give it "
            "soft_fail=True to skip the run instead of failing it."
        )


class CommandError(EtlkitError):
    """An external command failed: it exited with a code outside its ok codes, or did not start.

    Attributes:
        command: the command line, secrets masked.
        returncode: the exit code (negative: killed by that signal), or None if it did not start.
        stderr_tail: the last lines of its stderr, secrets masked.
        pipeline, node, run_id: where it ran.
    """

    def __init__(
        self,
        message: str,
        *,
        command: str,
        returncode: int | None,
        stderr_tail: Sequence[str] = (),
        pipeline: str = "",
        node: str = "",
        run_id: str = "",
    ) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr_tail = tuple(stderr_tail)
        self.pipeline = pipeline
        self.node = node
        self.run_id = run_id
        super().__init__(message)


class CommandTimeoutError(CommandError):
    """An external command ran past its timeout; its process group was killed."""


class NotificationError(EtlkitError):
    """A notifier could not deliver its message (HTTP error, unreachable server, SMTP error)."""


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


class RunExistsError(StoreError):
    """A run with this id, or a scheduled run for this pipeline and logical date, already exists.

    `existing_run_id` names the run already recorded, so a scheduler can pick it up instead.
    """

    def __init__(self, message: str, *, existing_run_id: str, pipeline: str) -> None:
        self.existing_run_id = existing_run_id
        self.pipeline = pipeline
        super().__init__(message)


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
