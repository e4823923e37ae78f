"""The cluster a `DaskExecutor` runs on: reaching it, where its workers are, what they need.

`start_client` connects to a scheduler, or starts a `LocalCluster` on 127.0.0.1 (processes,
no dashboard unless asked). `elsewhere` and `check_staging_reachable` decide whether the
workers share this machine's disks: staging on a local path serves only workers on this
machine, and a run with others is refused before anything runs. `ship_pipelines` makes the
pipeline's folder importable on the workers: on this machine by putting the folder on their
`sys.path`, elsewhere by uploading its code (worker plugins, `plugin`).
`prepare_workers` does all of it before a run, and has every worker import the class;
`stop_tasks` stops a failed run's tasks.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etlkit.engine.distributed.imports import pickling_kept
from etlkit.errors import EtlkitError

if TYPE_CHECKING:
    from etlkit.engine.distributed.spec import PipelineRef, WorkSpec
    from etlkit.storage.staging import Staging


def start_client(
    address: str | None, *, n_workers: int, threads_per_worker: int, dashboard: bool
) -> tuple[Any, list[Any]]:
    """A `distributed.Client` and what was started for it (to close after use): the client,
    and without `address` the `LocalCluster` on 127.0.0.1 it is connected to (one whose
    nannies keep restarting their workers: `localcluster.KeepingCluster`)."""
    with pickling_kept():
        from distributed import Client

    if address is not None:
        client = Client(address)
        return client, [client]
    from etlkit.engine.distributed.localcluster import KeepingCluster

    cluster = KeepingCluster(  # type: ignore[no-untyped-call]
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        # the scheduler's HTTP server runs in any case (health, metrics): on a free port of
        # 127.0.0.1, never on 8787 of every interface, which another cluster may hold; the
        # dashboard's pages only when asked (`client.dashboard_link`)
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": dashboard},
    )
    client = Client(cluster)
    return client, [client, cluster]


def worker_addresses(client: Any) -> list[str]:
    """The addresses of the client's workers now."""
    return sorted(client.scheduler_info(n_workers=-1)["workers"])


def this_machine() -> set[str]:
    """The names and addresses this machine answers to."""
    names = {"localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()}
    with contextlib.suppress(OSError):
        names.update(socket.gethostbyname_ex(socket.gethostname())[2])
    return names


def host_of(address: str) -> str:
    """The host of a Dask address (`tcp://10.0.0.5:8786` -> `10.0.0.5`); "" for an
    in-process one (`inproc://...`)."""
    scheme, _, rest = address.rpartition("://")
    if scheme == "inproc":
        return ""
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") else rest
    return host.strip("[]")


def elsewhere(addresses: Sequence[str], here: Collection[str]) -> list[str]:
    """The workers not on this machine (`here`: its names and addresses)."""
    return [
        a
        for a in addresses
        if (host := host_of(a)) and host not in here and not host.startswith("127.")
    ]


def check_staging_reachable(
    pipeline: str, staging_local: bool, root: str, addresses: Sequence[str], here: Collection[str]
) -> None:
    """Refuse staging on a local path with workers on other machines: they would write
    parts this machine never sees.

    Raises:
        EtlkitError: naming the workers elsewhere and the setting to change.
    """
    remote = elsewhere(addresses, here)
    if staging_local and remote:
        shown = ", ".join(remote[:3]) + (f" and {len(remote) - 3} more" if len(remote) > 3 else "")
        raise EtlkitError(
            f"Pipeline '{pipeline}' cannot run on this Dask cluster with staging on the local "
            f"path {root}: workers {shown} are on other machines and cannot reach it. Set "
            "`[staging] root` to an s3:// (or other shared fsspec) URL every worker can reach."
        )


def ship_pipelines(client: Any, ref: PipelineRef, pipeline: str, *, remote: bool) -> None:
    """Make the pipeline's module importable on the client's workers, those started later
    too: its folder on their `sys.path` when they share this machine, else its code uploaded
    (`plugin.PipelinesUpload`: the file's folder, or the module's top package).

    Raises:
        EtlkitError: the code to upload is too big (see `plugin.pack`).
    """
    if not ref.folder:
        return
    if not remote:
        from etlkit.engine.distributed.plugin import PipelinesPath

        client.register_plugin(PipelinesPath(ref.folder), name=f"etlkit-path:{ref.folder}")
        return
    from etlkit.engine.distributed.plugin import PipelinesUpload, pack

    root = Path(ref.folder)
    if ref.from_file:
        names = sorted(p.name for p in root.iterdir())
    else:
        top = ref.module.split(".", 1)[0]
        names = [top if (root / top).is_dir() else f"{top}.py"]
    data = pack(root, names, pipeline)
    client.register_plugin(PipelinesUpload(str(root), data), name=f"etlkit-upload:{root}")


def prepare_workers(client: Any, spec: WorkSpec, staging: Staging) -> str:
    """Check the workers can reach `staging`, ship them the pipeline's folder and have each
    import the pipeline class; the spec as the tasks get it (JSON).

    Raises:
        EtlkitError: staging is a local path and workers are elsewhere, or a worker cannot
            import the class (the message names it and the fix).
    """
    from etlkit.engine.distributed.tasks import check_importable

    addresses, here = worker_addresses(client), this_machine()
    pipeline = spec.context["pipeline"]
    check_staging_reachable(pipeline, staging.local, staging.root_url, addresses, here)
    ship_pipelines(client, spec.pipeline, pipeline, remote=bool(elsewhere(addresses, here)))
    text = spec.to_json()
    for problem in client.run(check_importable, text).values():
        if problem is not None:
            raise EtlkitError(problem)
    return text


def stop_tasks(client: Any, futures: list[Any], event_name: str, grace: float) -> bool:
    """Tell a run's tasks to stop (its cancel event: a running task stops at its next chunk
    boundary, one not started yet at its start), wait for them up to `grace` seconds, then
    drop what is left; whether they all stopped in time."""
    from distributed import Event, wait
    from distributed.client import FuturesCancelledError

    event = Event(event_name, client=client)
    event.set()
    stopped = True
    try:
        wait(futures, timeout=grace)
    except TimeoutError:
        stopped = False
    except FuturesCancelledError:
        pass  # cancelled by someone else: nothing to wait for
    client.cancel(futures)
    event.clear()
    return stopped
