# Airflow 1.10 style: DAG as a variable, python_operator imports, provide_context, set_upstream.
from datetime import datetime, timedelta

from airflow import DAG
from airflow.contrib.sensors.file_sensor import FileSensor
from airflow.operators.bash_operator import BashOperator
from airflow.operators.dummy_operator import DummyOperator
from airflow.operators.python_operator import PythonOperator

from dag_helpers import extract_orders, flaky_load

OUT = "out"

default_args = {
    "owner": "data",
    "retries": 2,
    "retry_delay": timedelta(seconds=0),
    "retry_exponential_backoff": False,
    "max_retry_delay": timedelta(minutes=10),
    "execution_timeout": timedelta(minutes=30),
}

dag = DAG(
    "legacy_etl",
    default_args=default_args,
    schedule_interval="0 6 * * *",
    start_date=datetime(2025, 1, 1),
    end_date=datetime(2025, 12, 31),
    catchup=False,
    max_active_runs=1,
)

wait = FileSensor(
    task_id="wait_for_input",
    filepath="in/{{ ds }}/ready.flag",
    poke_interval=1,
    timeout=5,
    mode="reschedule",
    dag=dag,
)

start = DummyOperator(task_id="start", dag=dag)

extract = PythonOperator(
    task_id="extract",
    python_callable=extract_orders,
    provide_context=True,
    op_kwargs={"out_dir": OUT},
    dag=dag,
)

load = PythonOperator(
    task_id="load",
    python_callable=flaky_load,
    op_kwargs={"out_dir": OUT, "ds": "{{ ds }}"},
    retries=3,
    pool="warehouse",
    dag=dag,
)

report = BashOperator(
    task_id="report",
    bash_command='echo "orders of {{ ds }}" > "out/report_{{ ds_nodash }}.txt"',
    dag=dag,
)

wait >> start
start.set_downstream(extract)
load.set_upstream(extract)
report.set_upstream([load])
