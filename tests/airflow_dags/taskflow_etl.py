# Airflow 2.x TaskFlow: @dag and @task, return values passed between tasks, DataFrames.
import pendulum
import polars as pl
from pathlib import Path

from airflow.decorators import dag, task

from dag_helpers import double, orders_frame, save_total


@dag(schedule="@daily", start_date=pendulum.datetime(2025, 1, 1), catchup=False)
def taskflow_etl():
    @task(retries=2)
    def extract(ds=None):
        return {"day": ds, "rows": [1, 2, 3]}

    @task
    def transform(payload):
        return {"day": payload["day"], "total": sum(payload["rows"])}

    @task
    def load(result, out_dir="out"):
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        Path(out_dir, f"total_{result['day']}.txt").write_text(str(result["total"]))

    @task
    def frame() -> pl.DataFrame:
        return orders_frame()

    @task
    def doubled(orders: pl.DataFrame) -> pl.DataFrame:
        return double(orders)

    @task
    def saved(orders: pl.DataFrame) -> None:
        save_total(orders)

    load(transform(extract()))
    saved(doubled(frame()))


taskflow_etl()
