# Airflow 3.x: airflow.sdk and airflow.providers.standard.
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator
from airflow.providers.standard.sensors.filesystem import FileSensor
from airflow.sdk import DAG, chain, task

from dag_helpers import extract_orders

with DAG("sdk_etl", schedule="@hourly", start_date=None) as dag:
    wait = FileSensor(task_id="wait", filepath="in/{{ ds_nodash }}.csv", poke_interval=1, timeout=5)
    extract = PythonOperator(
        task_id="extract", python_callable=extract_orders, op_kwargs={"out_dir": "out"}
    )
    touch = BashOperator(task_id="touch", bash_command="touch out/done_{{ ds }}")

    @task
    def announce(ds=None):
        return ds

    chain(wait, extract, touch, announce())
