# Constructs etlkit cannot map: each becomes a Todo node (or a finding) with its line.
import pickle
from datetime import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator
from airflow.operators.python import BranchPythonOperator, PythonOperator
from airflow.providers.postgres.operators.postgres import PostgresOperator
from airflow.utils.dates import days_ago
from airflow.providers.slack.notifications.slack import SlackNotifier
from company.operators import WarehouseOperator


def choose(**context):
    return "left"


def dump(**context):
    with open("/tmp/orders.pkl", "wb") as fh:
        pickle.dump([1, 2, 3], fh)
    context["ti"].xcom_push(key="rows", value=3)


def read(**context):
    return context["ti"].xcom_pull(task_ids="dump", key="rows")


with DAG("unmapped_etl", schedule_interval="@continuous", start_date=days_ago(1), on_success_callback=SlackNotifier(text="done")) as dag:
    branch = BranchPythonOperator(task_id="branch", python_callable=choose)
    dumped = PythonOperator(task_id="dump", python_callable=dump)
    read_back = PythonOperator(task_id="read", python_callable=read)
    warehouse = WarehouseOperator(task_id="warehouse", table="orders")
    sql = PostgresOperator(task_id="sql", sql="select 1", deferrable=True)
    macro = BashOperator(task_id="macro", bash_command="echo {{ macros.ds_add(ds, 1) }}")
    secret = BashOperator(task_id="secret", bash_command="echo {{ var.value.api_host }}")
    mapped = PythonOperator.partial(task_id="mapped", python_callable=read).expand(
        op_args=[[1], [2]]
    )
    for region in ["eu", "us"]:
        BashOperator(task_id=f"copy_{region}", bash_command="echo")
    branch >> [dumped, warehouse] >> read_back >> sql >> macro >> secret >> mapped
    cleanup = BashOperator(
        task_id="cleanup", bash_command="echo", trigger_rule="all_done", on_failure_callback=choose
    )
    from airflow.decorators import task

    @task.bash
    def shell():
        return "echo hi"

    mapped >> cleanup >> shell()
