"""Running a plan on a Dask cluster: `DaskExecutor`, partition-parallel streaming segments.

`segments` cuts a plan into streaming segments (a source and its chain of per-chunk nodes)
and single nodes; `spec` describes a run as JSON for the workers, who import the pipeline
class and build the same plan; `tasks` is what runs on a worker (a partition of a segment,
or a node whole); `outputs` is the coordinator's bookkeeping of partitions and their commit;
`cluster` reaches the cluster and checks what its workers can reach (`plugin`: the worker
plugin putting a pipelines folder on their path); `failures` the errors a run fails with;
`executor` is the coordinator. `dask` and `distributed` are imported only when a run uses
this executor, without their side effect on how exceptions pickle (`imports`).
"""

from __future__ import annotations

from etlkit.engine.distributed.executor import DaskExecutor

__all__ = ["DaskExecutor"]
