"""`etlkit import-airflow`: DAG files of each Airflow era, parsed (never run), mapped, written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from etlkit import Command
from etlkit.airflow_import import import_dag
from etlkit.airflow_import.templates import translate
from etlkit.cli import main
from etlkit.errors import AirflowImportError
from etlkit.runs.notifications import load_notifiers

DAGS = Path(__file__).resolve().parent.parent / "airflow_dags"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pipelines").mkdir()
    shutil.copy(DAGS / "dag_helpers.py", tmp_path / "pipelines" / "dag_helpers.py")
    return tmp_path


def airflow_import(*args: str) -> int:
    return main(["import-airflow", *args])


def test_a_dag_file_whose_import_has_side_effects_is_only_parsed(project: Path) -> None:
    assert airflow_import(str(DAGS / "side_effects_etl.py")) == 0
    assert not (project / "IMPORTED_MARKER").exists()
    assert not (DAGS / "IMPORTED_MARKER").exists()
    assert (
        "hello = Command(['bash', '-c', 'echo hello']"
        in (project / "pipelines" / "side_effects_etl.py").read_text()
    )


@pytest.mark.parametrize(
    ("dag", "code"),
    [("legacy_etl", 8), ("modern_etl", 8), ("taskflow_etl", 0), ("sdk_etl", 0)],
)
def test_every_era_imports_into_a_pipeline_that_validates(
    project: Path, dag: str, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    assert airflow_import(str(DAGS / f"{dag}.py")) == code
    assert (project / "pipelines" / f"{dag}.airflow-import.md").is_file()
    capsys.readouterr()
    assert main(["validate", "--pipelines", "pipelines"]) == 0, capsys.readouterr().out


def test_legacy_dag_maps_settings_operators_and_dependencies(project: Path) -> None:
    assert airflow_import(str(DAGS / "legacy_etl.py")) == 8  # the pool's size to review
    code = (project / "pipelines" / "legacy_etl.py").read_text()
    for expected in (
        "schedule = '0 6 * * *'",
        "start_date = '2025-01-01'",
        "end_date = '2025-12-31'",
        "catchup = False",
        "max_active_runs = 1",
        "retries = 2",
        "retry_delay = 0.0",
        "max_retry_delay = 600.0",
        "retry_exponential_backoff = False",
        "wait_for_input = FileSensor('in/{ds}/ready.flag', poke_interval=1.0, timeout=5.0)",
        "from dag_helpers import extract_orders",
        # the DummyOperator between the sensor and extract is gone, its edges kept
        "extract = PythonCall(extract_orders, kwargs={'out_dir': 'out'}, after=['wait_for_input'])"
        ".options(timeout=1800.0)",
        "context=False, after=['extract']).options(pool='warehouse', retries=3, timeout=1800.0)",
        '\'echo "orders of "{ds}"" > "out/report_"{ds_nodash}".txt"\'',
        "# dependencies only, no node: start (line 42, DummyOperator)",
    ):
        assert expected in code


def test_modern_dag_maps_groups_chain_sensors_email_and_callbacks(project: Path) -> None:
    assert airflow_import(str(DAGS / "modern_etl.py")) == 8
    code = (project / "pipelines" / "modern_etl.py").read_text()
    for expected in (
        "schedule = timedelta(seconds=21600)",
        "timezone = 'Europe/Paris'",
        "catchup = True",
        "timeout = 7200.0",
        "params = {'region': 'eu'}",
        "on_failure = ['email', airflow_callback(alert)]",
        "wait_upstream = RunSensor('legacy_etl', poke_interval=60.0, timeout=604800.0)",
        "landed = FileSensor('s3://raw/orders/{ds}/orders.csv', conn='lake', poke_interval=30.0,"
        " timeout=3600.0)",
        # [a, b] >> EmptyOperator >> group: the group's first task after both sensors
        "'mkdir -p out && cp in/{region}.csv out/{ds}.csv'], env={'DAY': '{ds}'}, "
        "inherit_env=True, after=['wait_upstream', 'landed'])",
        "stage_tidy = PythonCall(clean, args=['out/{ds}.csv '], after=['stage_fetch'])",
        # chain(group, count, [summary, mail]): the group's last task, then a fan-out
        "count = PythonCall(count_rows, kwargs={'path': 'out/{ds}.csv'}, after=['stage_tidy'])",
        "after=['count']).options(timeout=300.0)",
        "mail = SendEmail('email_mail', after=['count'])",
        "def clean(path, ds=None):",
    ):
        assert expected in code
    toml = (project / "etlkit.toml").read_text()
    assert "[notifiers.email]" in toml
    assert "[notifiers.email_mail]" in toml
    notifiers = load_notifiers(project)
    assert sorted(notifiers) == ["email", "email_mail"]
    report = (project / "pipelines" / "modern_etl.airflow-import.md").read_text()
    assert "| 71 | EmailOperator 'mail' to team@example.com |" in report


def test_notifier_stubs_keep_the_tables_etlkit_toml_has(project: Path) -> None:
    (project / "etlkit.toml").write_text(
        '[notifiers.email]\nkind = "webhook"\nurl = "http://h/x"\n'
    )
    assert airflow_import(str(DAGS / "modern_etl.py")) == 8
    notifiers = load_notifiers(project)
    assert type(notifiers["email"]).__name__ == "WebhookNotifier"
    assert "email_mail" in notifiers


def test_pools_are_added_to_etlkit_toml_beside_its_own(project: Path) -> None:
    (project / "etlkit.toml").write_text("[pools]\nwarehouse_eu = 2\n\n[run]\nretries = 0\n")
    assert airflow_import(str(DAGS / "legacy_etl.py")) == 8
    from etlkit.settings.config import read_toml

    assert read_toml(project / "etlkit.toml")["pools"] == {"warehouse_eu": 2, "warehouse": 1}
    report = (project / "pipelines" / "legacy_etl.airflow-import.md").read_text()
    assert "| 52 | pool 'warehouse' |" in report


def test_unmappable_constructs_become_todo_nodes_and_report_lines(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert airflow_import(str(DAGS / "unmapped_etl.py")) == 8
    printed = capsys.readouterr().out
    report = (project / "pipelines" / "unmapped_etl.airflow-import.md").read_text()
    for line, what in (
        (18, "passes pickles through /tmp"),
        (24, "pushes or pulls XComs"),
        (28, "'@continuous'"),
        (28, "start_date is computed"),
        (28, "on_success_callback `SlackNotifier(text='done')` cannot be called by etlkit"),
        (29, "branching operator BranchPythonOperator 'branch'"),
        (32, "custom operator company.operators.WarehouseOperator 'warehouse'"),
        (33, "deferrable operator"),
        (34, "macros.ds_add"),
        (35, "Airflow Variable 'api_host'"),
        (36, "dynamic task mapping"),
        (39, "`for` block"),
        (43, "trigger_rule='all_done' of task 'cleanup'"),
        (43, "on_failure_callback of task 'cleanup'"),
        (51, "TaskFlow @task.bash 'shell'"),
    ):
        assert any(f"| {line} | " in row and what in row for row in report.splitlines()), what
        assert f"line {line}: " in printed
    assert "staged by run id" in report
    assert "make this a node output" in report
    assert type(load_notifiers(project)["slacknotifier"]).__name__ == "WebhookNotifier"
    code = (project / "pipelines" / "unmapped_etl.py").read_text()
    assert "on_success = ['slacknotifier']" in code
    assert code.count(" = Todo(") == 6  # branch, warehouse, sql, macro, mapped, shell
    assert report.count("macros.ds_add") == 1
    assert main(["validate", "--pipelines", "pipelines"]) == 0


def test_a_todo_node_fails_the_run_saying_what_to_write(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert airflow_import(str(DAGS / "unmapped_etl.py")) == 8
    capsys.readouterr()
    assert main(["run", "unmapped_etl", "--date", "2025-03-01", "--progress", "none"]) == 1
    error = capsys.readouterr().err
    assert "is a TODO left by `etlkit import-airflow`" in error
    assert "branching operator BranchPythonOperator 'branch' (DAG file line 29)" in error


@pytest.mark.parametrize(
    ("dag", "message"),
    [
        ("cycle_etl", r"cycle_etl.py, line 9: the dependency c >> a closes the cycle a >> b >> c"),
        ("missing_task_etl", r"missing_task_etl.py, line 8: the dependency on `loader` names no"),
        ("syntax_error_etl", r"syntax_error_etl.py, line 5: is not valid Python"),
    ],
)
def test_invalid_dags_name_the_line(
    project: Path, dag: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AirflowImportError, match=message):
        import_dag(DAGS / f"{dag}.py", out_dir=project / "pipelines", project_dir=project)
    assert airflow_import(str(DAGS / f"{dag}.py")) == 3
    assert "line" in capsys.readouterr().err
    assert list((project / "pipelines").glob(f"{dag}*")) == []


def test_an_unreadable_file_or_an_existing_pipeline_is_exit_2(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert airflow_import(str(project / "nope.py")) == 2
    assert "nope.py cannot be read" in capsys.readouterr().err
    assert airflow_import(str(DAGS / "sdk_etl.py")) == 0
    assert airflow_import(str(DAGS / "sdk_etl.py")) == 2
    assert "pass --force" in capsys.readouterr().err
    assert airflow_import(str(DAGS / "sdk_etl.py"), "--force", "--name", "hourly") == 0
    assert "class Hourly(ek.Pipeline):" in (project / "pipelines" / "hourly.py").read_text()


def test_check_reports_and_writes_nothing(
    project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert airflow_import(str(DAGS / "modern_etl.py"), "--check") == 8
    printed = capsys.readouterr().out
    assert "line 71: EmailOperator 'mail'" in printed
    assert "would add the stub [notifiers.email]" in printed
    assert list((project / "pipelines").glob("modern_etl*")) == []
    assert not (project / "etlkit.toml").exists()


def test_templates_translate_to_fields_a_command_accepts() -> None:
    script = translate('cp "in/{{ ds }}.csv" ${HOME}/{{ params.region }}', shell=True)
    assert script.text == 'cp "in/"{ds}".csv" ${{HOME}}/{region}'
    assert script.params == ("region",)
    Command(["bash", "-c", script.text])  # refuses a field inside quotes
    assert translate("{{ execution_date }} {{ logical_date }}").text == (
        "{logical_date} {logical_date}"
    )
    assert translate("{{ data_interval_start }}/{{ data_interval_end }}").text == (
        "{data_interval_start}/{data_interval_end}"
    )
    variable = translate("{{ var.value.host }}")
    assert (variable.text, variable.variables) == ("{host}", ("host",))
    assert translate("{{ ti.xcom_pull('a') }}").untranslated == ("{{ ti.xcom_pull('a') }}",)


SHAPES = """
from airflow.sdk import DAG, chain, cross_downstream
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.utils.task_group import TaskGroup

with DAG("shapes", schedule=None) as dag:
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    c = EmptyOperator(task_id="c")
    d = EmptyOperator(task_id="d")
    e = EmptyOperator(task_id="e")
    f = EmptyOperator(task_id="f")
    with TaskGroup("load") as load:
        first = EmptyOperator(task_id="first")
        last = EmptyOperator(task_id="last")
        first >> last
    b << a
    [a, b] >> c
    chain(c, [d, e], [f, first])
    cross_downstream([d, e], [f])
    last.set_upstream([a])
    load >> f
"""


def test_dependencies_of_every_shape_become_edges(tmp_path: Path) -> None:
    from etlkit.airflow_import.parser import parse_dag_file

    path = tmp_path / "shapes.py"
    path.write_text(SHAPES)
    dag = parse_dag_file(path)
    assert [t.task_id for t in dag.tasks][-2:] == ["load.first", "load.last"]
    edges = {(e.upstream, e.downstream) for e in dag.edges}
    assert edges == {
        ("load.first", "load.last"),
        ("a", "b"),  # b << a
        ("a", "c"),  # [a, b] >> c
        ("b", "c"),
        ("c", "d"),  # chain: a task, then a list
        ("c", "e"),
        ("d", "f"),  # chain: lists of equal length, pairwise
        ("e", "load.first"),
        ("e", "f"),  # cross_downstream
        ("a", "load.last"),  # set_upstream
        ("load.last", "f"),  # a group stands for its last tasks upstream
    }
    assert {e.line for e in dag.edges if e.upstream == "c"} == {19}  # the chain(...) line


def test_an_emailoperator_sends_through_its_notifier(project: Path) -> None:
    from datetime import UTC, datetime

    from etlkit.airflow_import.runtime import SendEmail
    from etlkit.model.nodes import Context
    from tests.smtp_server import SmtpServer

    assert airflow_import(str(DAGS / "modern_etl.py")) == 8
    toml = project / "etlkit.toml"
    with SmtpServer.start() as server:
        toml.write_text(toml.read_text().replace("port = 25", f"port = {server.port}"))
        node = SendEmail("email_mail", project_dir=str(project))
        node.run(Context("modern_etl", "r1", datetime(2025, 3, 1, tzinfo=UTC), node="mail"))
        assert server.messages[0].rcpt_tos == ("team@example.com",)
        assert "modern_etl" in str(server.messages[0].message["Subject"])


def test_an_airflow_callback_gets_the_context_it_reads(project: Path) -> None:
    from datetime import UTC, datetime

    from etlkit.airflow_import.runtime import airflow_callback
    from etlkit.runs.notifications import NotificationContext, dispatch

    seen: list[dict[str, object]] = []
    note = NotificationContext(
        "failure", "modern_etl", "r1", datetime(2025, 3, 1, tzinfo=UTC), error="boom"
    )
    assert dispatch([airflow_callback(seen.append)], note, {}) == []
    assert seen[0]["dag_id"] == "modern_etl"
    assert seen[0]["ds"] == "2025-03-01"
    assert seen[0]["exception"] == "boom"


GROUPED = """
from airflow.decorators import dag, task, task_group


@dag(schedule=None)
def grouped():
    @task
    def start():
        return 1

    @task_group
    def load():
        @task
        def first():
            return 2

        @task
        def second():
            return 3

        first() >> second()

    @task
    def end():
        return 4

    start() >> load() >> end()


grouped()
"""


def test_a_task_group_function_is_flattened_with_prefixed_names(project: Path) -> None:
    from etlkit.airflow_import.parser import parse_dag_file

    path = project / "grouped.py"
    path.write_text(GROUPED)
    dag = parse_dag_file(path)
    assert [t.task_id for t in dag.tasks] == ["start", "load.first", "load.second", "end"]
    assert sorted((e.upstream, e.downstream) for e in dag.edges) == [
        ("load.first", "load.second"),
        ("load.second", "end"),
        ("start", "load.first"),
    ]
    assert airflow_import(str(path)) == 0
    code = (project / "pipelines" / "grouped.py").read_text()
    assert "load_second = PythonCall(second, after=['load_first'])" in code


def test_python_call_renders_arguments_and_passes_the_context_asked_for() -> None:
    from datetime import UTC, datetime

    from etlkit.airflow_import.runtime import PythonCall
    from etlkit.model.nodes import Context

    seen: dict[str, object] = {}

    def legacy(day: str, ds: str | None = None, **context: object) -> None:
        seen.update(day=day, ds=ds, names=sorted(context))

    def plain(day: str) -> None:
        seen.update(plain=day)

    ctx = Context("p", "r1", datetime(2025, 3, 1, tzinfo=UTC), node="n", params={"x": "1"})
    PythonCall(legacy, kwargs={"day": "{ds_nodash}"}).run(ctx)
    assert seen["day"] == "20250301"
    assert seen["ds"] == "2025-03-01"
    assert "params" in seen["names"]  # type: ignore[operator]
    PythonCall(plain, args=["{x}"]).run(ctx)  # takes no context name: gets none
    assert seen["plain"] == "1"
    PythonCall(max, args=[1, 2]).run(ctx)  # a builtin without a signature: no context


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ('schedule_interval="*/5 * * * *"', "schedule = '*/5 * * * *'"),
        ('schedule="@weekly"', "schedule = '@weekly'"),
        ('schedule="@quarterly"', "schedule = '0 0 1 */3 *'"),
        ('schedule="@once"', "schedule = None  # schedule (line 5) '@once': run it with"),
        ("schedule=None", "schedule = None  # schedule (line 5): manual runs only"),
        ("schedule_interval=timedelta(days=1)", "schedule = timedelta(seconds=86400)"),
        ("schedule=pendulum.duration(hours=1)", "schedule = timedelta(seconds=3600)"),
        ("", "schedule = '@daily'  # no schedule: Airflow 1.10/2.x default daily"),
        ('schedule=[Dataset("s3://x")]', "schedule = None  # TODO: schedule (line 5)"),
    ],
)
def test_schedules_map_to_cron_presets_timedeltas_or_none(
    project: Path, given: str, expected: str
) -> None:
    path = project / "scheduled.py"
    path.write_text(
        "from datetime import timedelta\n"
        "import pendulum\n"
        "from airflow import DAG, Dataset\n"
        "from airflow.operators.bash import BashOperator\n"
        f'with DAG("scheduled", {given}) as dag:\n'
        '    BashOperator(task_id="hello", bash_command="echo hello")\n'
    )
    code = 8 if "Dataset" in given else 0
    assert airflow_import(str(path), "--force") == code
    assert expected in (project / "pipelines" / "scheduled.py").read_text()
    assert main(["validate", "--pipelines", "pipelines"]) == 0


def test_an_airflow3_dag_without_schedule_is_manual(project: Path) -> None:
    path = project / "manual.py"
    path.write_text(
        "from airflow.sdk import DAG\n"
        "from airflow.providers.standard.operators.bash import BashOperator\n"
        'with DAG("manual") as dag:\n'
        '    BashOperator(task_id="hello", bash_command="echo hello")\n'
    )
    assert airflow_import(str(path)) == 0
    code = (project / "pipelines" / "manual.py").read_text()
    assert "schedule = None  # no schedule: Airflow 3 default" in code
    assert "catchup" not in code  # Airflow 3 and etlkit both default to no catchup


def test_names_and_values_from_the_dag_never_become_code(project: Path) -> None:
    path = project / "tricky.py"
    path.write_text(
        "from airflow import DAG\n"
        "from airflow.operators.bash import BashOperator\n"
        'with DAG(\'x"""\\nopen("PWNED", "w")\\n"""\', schedule=None) as dag:\n'
        '    BashOperator(task_id=\'a\\nopen("PWNED2", "w")\', bash_command=\'echo """\\n1\')\n'
    )
    assert airflow_import(str(path)) == 0
    assert main(["validate", "--pipelines", "pipelines"]) == 0
    assert not (project / "PWNED").exists()
    assert not (project / "PWNED2").exists()


def test_a_copied_function_brings_the_constants_and_imports_it_uses(project: Path) -> None:
    path = project / "consts.py"
    path.write_text(
        "from datetime import timedelta\n"
        "from airflow import DAG\n"
        "from airflow.operators.python import PythonOperator\n"
        "DELAY = timedelta(minutes=1)\n"
        "def helper():\n"
        "    return DELAY.total_seconds()\n"
        "def job():\n"
        "    return helper()\n"
        "with DAG('consts', schedule=None) as dag:\n"
        "    PythonOperator(task_id='job', python_callable=job)\n"
    )
    assert airflow_import(str(path)) == 0
    code = (project / "pipelines" / "consts.py").read_text()
    assert "from datetime import timedelta" in code
    assert "DELAY = timedelta(minutes=1)" in code
    assert "def helper():" in code
    assert main(["run", "consts", "--date", "2025-03-01", "--progress", "none"]) == 0


def test_a_module_the_pipeline_cannot_import_is_reported(
    project: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    # other tests of this process ran pipelines from folders holding a dag_helpers module
    monkeypatch.delitem(sys.modules, "dag_helpers", raising=False)
    monkeypatch.setattr(
        sys, "path", [p for p in sys.path if not Path(p, "dag_helpers.py").exists()]
    )
    (project / "pipelines" / "dag_helpers.py").unlink()
    assert airflow_import(str(DAGS / "legacy_etl.py")) == 8
    printed = capsys.readouterr().out
    assert printed.count("the module 'dag_helpers'") == 1
    assert "line 10: the pipeline imports the module 'dag_helpers'" in printed
    assert f"copy {DAGS / 'dag_helpers.py'} beside the pipeline" in printed


def test_a_long_chain_is_checked_for_cycles_without_deep_recursion(project: Path) -> None:
    from etlkit.airflow_import.parser import parse_dag_file

    tasks = "\n".join(f"    t{i} = EmptyOperator(task_id='t{i}')" for i in range(3000))
    path = project / "long.py"
    path.write_text(
        "from airflow import DAG\n"
        "from airflow.operators.empty import EmptyOperator\n"
        "from airflow.models.baseoperator import chain\n"
        "with DAG('long', schedule=None) as dag:\n"
        f"{tasks}\n"
        f"    chain({', '.join(f't{i}' for i in range(3000))})\n"
        "    t2999 >> t0\n"
    )
    with pytest.raises(AirflowImportError, match=r"line 3006: the dependency t2999 >> t0 closes"):
        parse_dag_file(path)


def test_a_long_chain_imports_into_a_valid_pipeline(project: Path) -> None:
    tasks = "\n".join(
        f"    t{i} = BashOperator(task_id='t{i}', bash_command='true')" for i in range(1500)
    )
    path = project / "long.py"
    path.write_text(
        "from airflow import DAG\n"
        "from airflow.operators.bash import BashOperator\n"
        "from airflow.models.baseoperator import chain\n"
        "with DAG('long', schedule=None) as dag:\n"
        f"{tasks}\n"
        f"    chain({', '.join(f't{i}' for i in reversed(range(1500)))})\n"
    )
    assert airflow_import(str(path)) == 0
    code = (project / "pipelines" / "long.py").read_text()
    assert code.index("    t1499 = Command(") < code.index("    t0 = Command(")
    assert "t0 = Command(['bash', '-c', 'true'], inherit_env=True, after=['t1'])" in code


def test_a_sensor_timing_computed_at_parse_time_keeps_airflows_default(project: Path) -> None:
    path = project / "timing.py"
    path.write_text(
        "import os\n"
        "from airflow.sdk import DAG\n"
        "from airflow.providers.standard.sensors.filesystem import FileSensor\n"
        "with DAG('timing', schedule=None) as dag:\n"
        "    FileSensor(task_id='wait', filepath='in/{{ ds }}', poke_interval=int(os.getenv('')))\n"
    )
    assert airflow_import(str(path)) == 8
    code = (project / "pipelines" / "timing.py").read_text()
    assert "wait = FileSensor('in/{ds}', poke_interval=60.0, timeout=604800.0)" in code
    report = (project / "pipelines" / "timing.airflow-import.md").read_text()
    assert "| 5 | poke_interval of 'wait' is not a literal |" in report
    assert main(["validate", "--pipelines", "pipelines"]) == 0
