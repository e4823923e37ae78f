# Importing this file would write a file and fail: the importer only parses it.
from pathlib import Path

from airflow import DAG
from airflow.operators.bash import BashOperator

Path("IMPORTED_MARKER").write_text("the DAG file was imported")
raise SystemExit("this DAG file must never be run by the importer")

with DAG("side_effects_etl", schedule=None) as dag:
    BashOperator(task_id="hello", bash_command="echo hello")
