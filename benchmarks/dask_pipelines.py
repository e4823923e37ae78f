"""TPC-H Q1 and the reshape with lineitem split into partitions, for the `etlkit-dask` variant.

`pipelines/tpch_q1.py` and `pipelines/tpch_reshape.py` read lineitem as one file, which the Dask
executor runs as one partition (one worker). These subclasses replace only the source, with
`partition_rows`: runs of consecutive row groups of at most `PARTITION_ROWS` rows are the
partitions the workers share (SF1's lineitem, 53 row groups of about 113,000 rows: 6
partitions; SF10: about 60). A local run reads the file as the base class does.
"""

from __future__ import annotations

from typing import Final

from connectors.files import ParquetSource
from pipelines.tpch_q1 import TpchQ1
from pipelines.tpch_reshape import TpchReshape

#: Rows per partition at most: a few seconds of work each, many partitions per worker at SF10.
PARTITION_ROWS: Final = 1_000_000


class TpchQ1Split(TpchQ1):
    """TPC-H Q1, lineitem read in partitions of row groups."""

    lineitem = ParquetSource(
        "{data_dir}/parquet/lineitem.parquet",
        schema=TpchQ1.lineitem.output_model,
        partition_rows=PARTITION_ROWS,
    )


class TpchReshapeSplit(TpchReshape):
    """The reshape, lineitem read in partitions of row groups."""

    lineitem = ParquetSource(
        "{data_dir}/parquet/lineitem.parquet",
        schema=TpchReshape.lineitem.output_model,
        partition_rows=PARTITION_ROWS,
    )


#: The pipeline `etlkit-dask` runs instead of the workload's own, by workload name.
SPLIT: Final = {
    "q1-parquet": "benchmarks.dask_pipelines:TpchQ1Split",
    "reshape-parquet": "benchmarks.dask_pipelines:TpchReshapeSplit",
}
