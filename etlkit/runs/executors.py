"""Which executor runs a run's nodes, from the settings, and its cluster's life.

`run.executor = "local"` (the default) is the engine's `LocalExecutor`: threads of this process.
`"dask"` is a `DaskExecutor` on the Dask cluster at `dask.address`, or, without one, on a
`LocalCluster` of `dask.workers` processes on 127.0.0.1 started for the run; `open_executor`
closes the client (and a cluster it started) when the run ends, however it ends. Dask is
imported only when a run asks for it. The `description` is what the run store records and
`etlkit show` prints: `local`, `dask tcp://10.0.0.5:8786` or `dask LocalCluster
tcp://127.0.0.1:40211 (2 workers)`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from etlkit.errors import ConfigError

if TYPE_CHECKING:
    from etlkit.engine.distributed import DaskExecutor
    from etlkit.engine.executor import Executor
    from etlkit.settings.config import Settings

#: The extra that installs Dask (`pip install "etlkit-framework[dask]"`).
_INSTALL_HINT = 'pip install "etlkit-framework[dask]"'


#: The command-line flags of the executor's settings (`etlkit run`, the scheduler's workers).
EXECUTOR_FLAGS: Final = {"run.executor": "--executor", "dask.address": "--scheduler-address"}


def executor_flags(executor: str | None, address: str | None) -> dict[str, object]:
    """The settings `--executor` and `--scheduler-address` set, as dotted keys (for the CLI
    layer of `load_settings`): an address alone means the Dask executor."""
    given: dict[str, object] = {}
    if address is not None:
        given["dask.address"] = address
        given["run.executor"] = "dask"
    if executor is not None:
        given["run.executor"] = executor
    return given


def worker_flags(settings: Settings) -> list[str]:
    """The flags that give a run's worker process the executor settings these settings took
    from the command line (`etlkit scheduler --executor dask`); the rest it reads itself."""
    flags: list[str] = []
    for key, flag in EXECUTOR_FLAGS.items():
        if settings.sources.get(key, "").startswith("cli"):
            section, _, name = key.partition(".")
            flags += [flag, str(getattr(getattr(settings, section), name))]
    return flags


@dataclass(frozen=True)
class OpenExecutor:
    """The executor a run uses (`None`: the engine's local one) and how the store names it."""

    executor: Executor | None
    description: str


@contextmanager
def open_executor(settings: Settings) -> Iterator[OpenExecutor]:
    """The executor `settings.run.executor` names, open for the length of the block.

    Raises:
        ConfigError: `dask` without Dask installed, or a cluster that cannot be reached or
            started (the message names the address, the setting's source and what to do).
    """
    if settings.run.executor != "dask":
        yield OpenExecutor(None, "local")
        return
    executor = _connect(settings)
    try:
        yield OpenExecutor(executor, _describe(executor, settings))
    finally:
        executor.close()


def _connect(settings: Settings) -> DaskExecutor:
    """A `DaskExecutor` connected to the settings' cluster (a LocalCluster without an address)."""
    from etlkit.engine.distributed import DaskExecutor

    address = settings.dask.address
    try:
        return DaskExecutor.connect(
            address,
            n_workers=settings.dask.workers,
            threads_per_worker=1,
            dashboard=settings.dask.dashboard,
            no_workers_grace=settings.dask.no_workers_grace,
        )
    except ModuleNotFoundError as exc:
        if exc.name not in ("dask", "distributed"):
            raise
        raise ConfigError(
            f"Setting run.executor = dask (from {settings.sources['run.executor']}) needs Dask,"
            f" which is not installed: {_INSTALL_HINT}, or run with --executor local."
        ) from exc
    except (OSError, TimeoutError) as exc:
        if address is None:
            where = f"A LocalCluster of {settings.dask.workers} workers could not be started"
            fix = "check the machine's free memory and ports, or run with --executor local"
        else:
            where = (
                f"The Dask scheduler at {address} (dask.address, from "
                f"{settings.sources['dask.address']}) could not be reached"
            )
            fix = (
                "start it (`dask scheduler`, and `dask worker` on each machine), check the "
                "address, or leave dask.address unset for a LocalCluster on this machine"
            )
        raise ConfigError(f"{where}: {exc}. {fix[0].upper()}{fix[1:]}.") from exc


def _describe(executor: DaskExecutor, settings: Settings) -> str:
    """`dask ADDRESS`, or for a LocalCluster started here its address and size."""
    address = str(executor.client.scheduler.address)
    if settings.dask.address is not None:
        return f"dask {address}"
    return f"dask LocalCluster {address} ({settings.dask.workers} workers)"
