from airflow import DAG
from airflow.operators.empty import EmptyOperator

with DAG("missing_task_etl", schedule=None) as dag:
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    a >> b
    b >> loader
