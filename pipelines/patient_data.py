"""Patient data: extract the patients CSV, validate, clean, load into a DuckDB table.

    etlkit run patient_data --param data_dir=data/demo
    etlkit run patient_data_postgres --param data_dir=data/demo

Replaces the users' Airflow DAG (extract -> validate -> transform -> load). Patients without an id
or an empty extract stop the run before anything is loaded; the load replaces the table
atomically, so a failed run leaves yesterday's table intact.

`PatientDataPostgres` is the same pipeline loading the PostgreSQL table `patients` of the named
connection `hospital_db` (the DAG's `postgres_conn_id`), configured in etlkit.toml or as
`ETLKIT_CONN_HOSPITAL_DB=postgresql://user:password@host:5432/hospital`. The connection is only
resolved when the load runs, so `etlkit validate` needs no database. To load another server (a
test's, say), subclass it with a fresh sink:
`load = PostgresSink("cleaned", dsn="postgresql://...", table="patients", mode="replace")`.
"""

from __future__ import annotations

import pandera.polars as pdp
import polars as pl

import etlkit as ek
from connectors.duckdb import DuckDBTableSink
from connectors.files import CsvSource
from connectors.postgres import PostgresSink


class RawPatient(pdp.DataFrameModel):
    """A patient as the registration system exports it."""

    patient_id: int = pdp.Field(nullable=False, unique=True)
    first_name: str = pdp.Field(nullable=True)
    last_name: str = pdp.Field(nullable=True)
    birth_date: pl.Date = pdp.Field(nullable=True)
    sex: str = pdp.Field(nullable=True)
    email: str = pdp.Field(nullable=True)
    registered_at: pl.Datetime = pdp.Field(nullable=True)


class Patient(pdp.DataFrameModel):
    """A cleaned patient record, ready for the warehouse."""

    patient_id: int = pdp.Field(nullable=False, unique=True)
    first_name: str = pdp.Field(nullable=True)
    last_name: str = pdp.Field(nullable=True)
    full_name: str = pdp.Field(nullable=True)
    birth_date: pl.Date = pdp.Field(nullable=True)
    sex: str = pdp.Field(nullable=True, isin=["F", "M", "X"])
    email: str = pdp.Field(nullable=True, str_contains="@")
    registered_at: pl.Datetime = pdp.Field(nullable=True)


class CleanPatients(ek.Transform[RawPatient, Patient]):
    """Trims names, lower-cases e-mails, turns empty strings into nulls."""

    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        def text(column: str) -> pl.Expr:
            value = pl.col(column).str.strip_chars()
            return pl.when(value == "").then(None).otherwise(value)

        return (
            batch.with_columns(
                first_name=text("first_name"),
                last_name=text("last_name"),
                email=text("email").str.to_lowercase(),
                sex=text("sex").str.to_uppercase(),
            )
            .with_columns(
                full_name=pl.concat_str(
                    "first_name", "last_name", separator=" ", ignore_nulls=True
                ),
            )
            .select(
                "patient_id",
                "first_name",
                "last_name",
                "full_name",
                "birth_date",
                "sex",
                "email",
                "registered_at",
            )
        )


class PatientData(ek.Pipeline):
    """Patients CSV -> validated, cleaned -> DuckDB table `patients`."""

    params = {"data_dir": "data/demo", "warehouse": "data/warehouse.duckdb"}
    schedule = "@daily"

    patients = CsvSource("{data_dir}/patients.csv", schema=RawPatient).expect(min_rows=1)
    cleaned = CleanPatients(patients)
    load: ek.Sink = DuckDBTableSink("{warehouse}", "patients", cleaned, mode="replace")


class PatientDataPostgres(PatientData):
    """Patients CSV -> validated, cleaned -> PostgreSQL table `patients` of `hospital_db`.

    Define the connection (`ETLKIT_CONN_HOSPITAL_DB=postgresql://user:pass@host/db`) and set a
    schedule to run it daily, as the Airflow DAG it replaces did.
    """

    schedule = None  # not scheduled until `hospital_db` is defined on the machine
    load = PostgresSink(PatientData.cleaned, conn="hospital_db", table="patients", mode="replace")
