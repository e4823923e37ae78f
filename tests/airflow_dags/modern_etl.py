# Airflow 2.x style: `with DAG`, operators from airflow.operators.* and providers, task groups,
# chain, lists on both sides, pendulum timezone, callbacks and email.
import pendulum
from datetime import timedelta

from airflow import DAG
from airflow.models.baseoperator import chain
from airflow.operators.bash import BashOperator
from airflow.operators.email import EmailOperator
from airflow.operators.empty import EmptyOperator
from airflow.operators.python import PythonOperator
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.sensors.external_task import ExternalTaskSensor
from airflow.utils.task_group import TaskGroup

from dag_helpers import alert, count_rows, write_summary


def clean(path, ds=None):
    # defined in the DAG file: copied into the pipeline
    return path.strip() + ds


with DAG(
    dag_id="modern_etl",
    schedule=timedelta(hours=6),
    start_date=pendulum.datetime(2025, 3, 1, tz="Europe/Paris"),
    catchup=True,
    params={"region": "eu"},
    dagrun_timeout=timedelta(hours=2),
    default_args={
        "retries": 1,
        "email": ["oncall@example.com"],
        "email_on_failure": True,
        "on_failure_callback": alert,
        "pool": "default_pool",
    },
) as dag:
    upstream = ExternalTaskSensor(
        task_id="wait_upstream", external_dag_id="legacy_etl", external_task_id="load"
    )
    landed = S3KeySensor(
        task_id="landed",
        bucket_name="raw",
        bucket_key="orders/{{ ds }}/orders.csv",
        aws_conn_id="lake",
        poke_interval=30,
        timeout=timedelta(hours=1),
    )
    begin = EmptyOperator(task_id="begin")
    with TaskGroup("stage") as stage:
        fetch = BashOperator(
            task_id="fetch",
            bash_command="mkdir -p out && cp in/{{ params.region }}.csv out/{{ ds }}.csv",
            env={"DAY": "{{ ds }}"},
            append_env=True,
        )
        tidy = PythonOperator(
            task_id="tidy", python_callable=clean, op_args=["out/{{ ds }}.csv "]
        )
        fetch >> tidy
    count = PythonOperator(
        task_id="count", python_callable=count_rows, op_kwargs={"path": "out/{{ ds }}.csv"}
    )
    summary = PythonOperator(
        task_id="summary",
        python_callable=write_summary,
        op_kwargs={"summary": {"rows": 0}, "out_dir": "out"},
        execution_timeout=timedelta(minutes=5),
    )
    mail = EmailOperator(task_id="mail", to="team@example.com", subject="done {{ ds }}")
    [upstream, landed] >> begin >> stage
    chain(stage, count, [summary, mail])
