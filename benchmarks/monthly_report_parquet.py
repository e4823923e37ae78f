"""The monthly financial report reading the Parquet copy of its inputs, for the benchmarks.

`pipelines/monthly_report.py` reads CSV exports; `python -m data.generate --format both` also
writes every table as Parquet next to the CSV. This subclass replaces only the two sources, so
both variants share the cleaning, the join, the aggregation and the sinks.
"""

from __future__ import annotations

from connectors.files import ParquetSource
from pipelines.monthly_report import MonthlyReport, RawBilling, RawInsurance


class MonthlyReportParquet(MonthlyReport):
    """The monthly financial report from `billing/*/billing.parquet` and `insurance.parquet`."""

    # the base class declares CsvSource nodes; replacing a node by another source is the point
    billing = ParquetSource(  # type: ignore[assignment]
        "{data_dir}/billing/*/billing.parquet", schema=RawBilling
    ).expect(min_rows=1)
    insurance = ParquetSource(  # type: ignore[assignment]
        "{data_dir}/insurance.parquet", schema=RawInsurance
    ).expect(min_rows=1)
