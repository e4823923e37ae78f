"""The monthly financial report: billing and insurance in parallel branches, joined, aggregated.

    python -m data.generate --rows 1000000 --out data/demo
    etlkit run monthly_report --date 2025-03-01

Billing (all months under `{data_dir}/billing/`) and insurance are cleaned in two branches that
run concurrently, joined on the patient in DuckDB, and aggregated per month and payer into the
report, written as Parquet and CSV under `{out_dir}/{ds}/`.
"""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.files import CsvSink, CsvSource, ParquetSink


class RawBilling(pdp.DataFrameModel):
    """One invoice as the billing system exports it."""

    invoice_id: int = pdp.Field(nullable=False, unique=True)
    patient_id: int = pdp.Field(nullable=False)
    amount: float = pdp.Field(ge=0)
    billed_at: pl.Datetime = pdp.Field(nullable=False)
    payer_id: int
    status: str = pdp.Field(isin=["paid", "pending", "denied"])


class Billing(pdp.DataFrameModel):
    """A billable invoice with its month."""

    invoice_id: int = pdp.Field(nullable=False)
    patient_id: int = pdp.Field(nullable=False)
    amount: float = pdp.Field(ge=0)
    month: str = pdp.Field(str_matches=r"^\d{4}-\d{2}$")
    status: str = pdp.Field(isin=["paid", "pending"])


class RawInsurance(pdp.DataFrameModel):
    """A patient's coverage as the insurance feed exports it."""

    patient_id: int = pdp.Field(nullable=False)
    payer_id: int = pdp.Field(nullable=False)
    payer_name: str
    plan: str = pdp.Field(isin=["bronze", "silver", "gold"])
    coverage_pct: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 1.0})


class Coverage(pdp.DataFrameModel):
    """A patient's payer and covered share."""

    patient_id: int = pdp.Field(nullable=False)
    payer_name: str = pdp.Field(nullable=False)
    coverage_pct: float = pdp.Field(in_range={"min_value": 0.0, "max_value": 1.0})


class Report(pdp.DataFrameModel):
    """One line of the report: a month and a payer."""

    month: str = pdp.Field(nullable=False)
    payer_name: str = pdp.Field(nullable=False)
    invoices: int = pdp.Field(ge=0)
    billed: float = pdp.Field(ge=0)
    covered: float = pdp.Field(ge=0)
    patient_share: float = pdp.Field(ge=0)


class CleanBilling(ek.Transform[RawBilling, Billing]):
    """Drops denied invoices and adds the billing month."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.filter(pl.col("status") != "denied").select(
            "invoice_id",
            "patient_id",
            pl.col("amount").round(2),
            month=pl.col("billed_at").dt.strftime("%Y-%m"),
            status="status",
        )


class CleanInsurance(ek.Transform[RawInsurance, Coverage]):
    """Keeps each patient's payer name (trimmed) and covered share."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.select(
            "patient_id",
            pl.col("payer_name").str.strip_chars(),
            "coverage_pct",
        )


class MonthlyReport(ek.Pipeline):
    """Billing and insurance, joined and aggregated per month and payer."""

    params = {"data_dir": "data/demo", "out_dir": "data/reports"}
    schedule = "0 2 1 * *"

    billing = CsvSource("{data_dir}/billing/*/billing.csv", schema=RawBilling).expect(min_rows=1)
    insurance = CsvSource("{data_dir}/insurance.csv", schema=RawInsurance).expect(min_rows=1)
    billing_clean = CleanBilling(billing)
    coverage = CleanInsurance(insurance)
    report = ek.Sql(
        """
        select b.month,
               c.payer_name,
               count(*)::bigint as invoices,
               round(sum(b.amount), 2) as billed,
               round(sum(b.amount * c.coverage_pct), 2) as covered,
               round(sum(b.amount * (1 - c.coverage_pct)), 2) as patient_share
        from {billing_clean} b
        join {coverage} c using (patient_id)
        group by b.month, c.payer_name
        order by b.month, c.payer_name
        """,
        schema=Report,
    )
    report_parquet = ParquetSink("{out_dir}/{ds}/monthly_report.parquet", report)
    report_csv = CsvSink("{out_dir}/{ds}/monthly_report.csv", report)
