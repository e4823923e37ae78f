"""Command: templated arguments, exit codes, logged output, timeouts, explicit env, secrets."""

from __future__ import annotations

import logging
import os
import pickle
import select
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from etlkit.errors import ConfigError, PipelineDefinitionError, RunCancelledError
from etlkit.model.commands import Command, CommandError, CommandTimeoutError
from etlkit.model.nodes import Context
from etlkit.settings import connections

SECRET = "hunter2-S3cr3t"


def make_ctx(params: dict[str, str] | None = None, cancel_after: int | None = None) -> Context:
    """A context for node 'notify'; `cancel_after=N` reports the run cancelled from poll N on."""
    polls = iter(range(1, 1_000_000))
    return Context(
        pipeline="monthly_report",
        run_id="r1",
        logical_date=datetime(2025, 3, 1, tzinfo=UTC),
        node="notify",
        params=params or {},
        cancelled=lambda: cancel_after is not None and next(polls) >= cancel_after,
    )


def py(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def output(caplog: pytest.LogCaptureFixture, stream: str = "stdout") -> list[str]:
    prefix = f"{stream}: "
    return [
        r.getMessage().removeprefix(prefix)
        for r in caplog.records
        if r.name == "etlkit.model.commands" and r.getMessage().startswith(prefix)
    ]


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="etlkit.model.commands")


@pytest.fixture
def hospital_db() -> Iterator[None]:
    conn = connections.Connection(
        "hospital_db", "postgresql", login="etl", password=connections.SecretStr(SECRET)
    )
    previous = connections.activate({"hospital_db": conn})
    try:
        yield
    finally:
        connections.activate(previous)


def test_arguments_are_rendered_from_the_context(caplog: pytest.LogCaptureFixture) -> None:
    code = "import sys; print(' '.join(sys.argv[1:]))"
    Command(py(code, "{ds}", "{ds_nodash}", "{region}")).run(make_ctx({"region": "north"}))
    assert output(caplog) == ["2025-03-01 20250301 north"]


def test_output_lines_are_logged_from_the_node_thread(caplog: pytest.LogCaptureFixture) -> None:
    code = "import sys; print('one'); print('two'); print('oops', file=sys.stderr)"
    Command(py(code)).run(make_ctx())
    assert output(caplog, "stdout") == ["one", "two"]
    assert output(caplog, "stderr") == ["oops"]
    lines = [r for r in caplog.records if r.getMessage().startswith(("stdout:", "stderr:"))]
    assert {r.levelno for r in lines} == {logging.INFO}
    # the run's log keeps records from the node's thread: output is logged from the caller
    assert {r.thread for r in lines} == {threading.get_ident()}


def test_a_failing_exit_code_raises_with_the_stderr_tail() -> None:
    code = "import sys\nfor i in range(25): print('err-%02d' % i, file=sys.stderr)\nsys.exit(3)"
    with pytest.raises(CommandError, match=r"exited with code 3 \(ok: 0\)") as caught:
        Command(py(code)).run(make_ctx())
    message = str(caught.value)
    assert "err-24" in message
    assert "err-05" in message
    assert "err-04" not in message  # only the last 20 lines
    assert "node 'notify' in pipeline 'monthly_report' (run r1)" in message
    assert "etlkit logs r1" in message
    assert caught.value.returncode == 3
    assert len(caught.value.stderr_tail) == 20
    assert caught.value.command.startswith(sys.executable)


def test_ok_codes_accept_other_exit_codes() -> None:
    Command(py("import sys; sys.exit(3)"), ok_codes=(0, 3)).run(make_ctx())


def test_a_missing_program_cannot_start() -> None:
    with pytest.raises(CommandError, match=r"could not start.*on the PATH"):
        Command(["etlkit-no-such-program", "{ds}"]).run(make_ctx())


@pytest.mark.slow
def test_timeout_kills_the_whole_process_group(caplog: pytest.LogCaptureFixture) -> None:
    code = (
        "import subprocess, sys, threading\n"
        "block = 'import threading; threading.Event().wait(30)'\n"
        "child = subprocess.Popen([sys.executable, '-c', block])\n"
        "print(child.pid, flush=True)\n"
        "threading.Event().wait(30)"
    )
    started = time.monotonic()
    with pytest.raises(CommandTimeoutError, match=r"timed out after 1 s; its process group"):
        Command(py(code), timeout=1).run(make_ctx())
    assert time.monotonic() - started < 8
    (pid,) = output(caplog)
    assert not running(int(pid)), "the grandchild outlived the command"


def running(pid: int) -> bool:
    """Whether `pid` is still alive 5 s from now (it may still be tearing down right now).

    Waits on a pidfd, which becomes readable when the process has terminated: no sleeping.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        readable, _, _ = select.select([fd], [], [], 5.0)
    finally:
        os.close(fd)
    return not readable


def test_processes_left_holding_the_output_are_terminated(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("etlkit.model.commands._ORPHAN_GRACE_S", 0.2)
    code = (
        "import subprocess, sys\n"
        "block = 'import threading; threading.Event().wait(30)'\n"
        "child = subprocess.Popen([sys.executable, '-c', block])\n"
        "print(child.pid, flush=True)"
    )
    started = time.monotonic()
    Command(py(code)).run(make_ctx())  # the command itself succeeded
    assert time.monotonic() - started < 8
    (pid,) = output(caplog)
    assert not running(int(pid))
    assert "still hold its output open" in caplog.text


def test_a_cancelled_run_terminates_the_command() -> None:
    started = time.monotonic()
    with pytest.raises(RunCancelledError, match="terminated: run cancelled"):
        Command(py("import threading; threading.Event().wait(30)")).run(make_ctx(cancel_after=3))
    assert time.monotonic() - started < 8


def test_the_environment_is_explicit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ETLKIT_TEST_NOT_PASSED", "leak")
    code = (
        "import os\n"
        "for name in ('ETLKIT_TEST_NOT_PASSED', 'REPORT_DATE', 'ETLKIT_DS', 'ETLKIT_RUN_ID',"
        " 'ETLKIT_PIPELINE'):\n"
        "    print(name, os.environ.get(name))\n"
        "print('PATH' in os.environ)"
    )
    Command(py(code), env={"REPORT_DATE": "{ds}"}).run(make_ctx())
    assert output(caplog) == [
        "ETLKIT_TEST_NOT_PASSED None",
        "REPORT_DATE 2025-03-01",
        "ETLKIT_DS 2025-03-01",
        "ETLKIT_RUN_ID r1",
        "ETLKIT_PIPELINE monthly_report",
        "True",
    ]


def test_inherit_env_passes_the_whole_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ETLKIT_TEST_PASSED", "yes")
    code = "import os; print(os.environ.get('ETLKIT_TEST_PASSED'))"
    Command(py(code), inherit_env=True).run(make_ctx())
    assert output(caplog) == ["yes"]


@pytest.mark.usefixtures("hospital_db")
def test_secrets_are_passed_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DB_PASSWORD", "from-etlkit-environment")
    code = f"import os; print(os.environ.get('DB_PASSWORD') == {SECRET!r})"
    Command(py(code), secrets={"DB_PASSWORD": "hospital_db"}).run(make_ctx())
    plain = "import os; print(os.environ.get('DB_PASSWORD'))"
    Command(py(plain)).run(make_ctx())
    assert output(caplog) == ["True", "None"]


@pytest.mark.usefixtures("hospital_db")
def test_secrets_are_masked_in_logs_and_errors(caplog: pytest.LogCaptureFixture) -> None:
    code = (
        "import os, sys\n"
        "secret = os.environ['DB_PASSWORD']\n"
        "print('connecting with', secret)\n"
        "print('auth failed for', secret, file=sys.stderr)\n"
        "sys.exit(1)"
    )
    command = Command(py(code, SECRET), secrets={"DB_PASSWORD": "hospital_db"})
    with pytest.raises(CommandError) as caught:
        command.run(make_ctx())
    assert SECRET not in str(caught.value)
    assert SECRET not in caught.value.command
    assert "auth failed for ***" in str(caught.value)
    assert SECRET not in caplog.text
    assert "connecting with ***" in output(caplog)
    started = [r.getMessage() for r in caplog.records if r.getMessage().startswith("command:")]
    assert len(started) == 1
    assert "***" in started[0]
    assert "DB_PASSWORD" in started[0]


def test_a_secret_connection_without_a_password_is_a_config_error() -> None:
    previous = connections.activate({"nopass": connections.Connection("nopass", "postgresql")})
    try:
        with pytest.raises(ConfigError, match="Connection 'nopass' has no password"):
            Command(py("pass"), secrets={"PW": "nopass"}).run(make_ctx())
    finally:
        connections.activate(previous)


def test_shell_commands_get_shell_quoted_template_values(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Command("echo {who} {ds}", shell=True).run(make_ctx({"who": "a b; echo injected"}))
    assert output(caplog) == ["a b; echo injected 2025-03-01"]


def test_a_string_command_is_split_like_a_shell(caplog: pytest.LogCaptureFixture) -> None:
    Command(f"'{sys.executable}' -c 'print(\"hi {{ds}}\")'").run(make_ctx())
    assert output(caplog) == ["hi 2025-03-01"]


def test_cwd_is_templated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "2025-03-01").mkdir()
    code = "import os; print(os.path.basename(os.getcwd()))"
    Command(py(code), cwd=str(tmp_path / "{ds}")).run(make_ctx())
    assert output(caplog) == ["2025-03-01"]
    with pytest.raises(CommandError, match="is not a directory"):
        Command(py(code), cwd=str(tmp_path / "missing")).run(make_ctx())


def test_definition_errors_are_reported_together() -> None:
    with pytest.raises(PipelineDefinitionError) as caught:
        Command(
            ["echo"],
            shell=True,
            env={"X": "1"},
            secrets={"X": "db"},
            timeout=0,
            ok_codes=(),
        )
    problems = caught.value.problems
    assert any("one command string" in p for p in problems)
    assert any("X set both in env and in secrets" in p for p in problems)
    assert any("timeout must be > 0" in p for p in problems)
    assert any("ok_codes" in p for p in problems)


def test_after_declares_dependencies() -> None:
    command = Command(["true"], after=["report"])
    assert command.inputs == ("report",)
    assert command.kind == "task"


def test_command_error_pickles() -> None:
    error = CommandError("failed", command="x", returncode=2, stderr_tail=["a"], node="n")
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.returncode, copy.stderr_tail, copy.node) == ("failed", 2, ("a",), "n")


INJECTED_TEMPLATES = [
    "echo {label} > {out}",
    "echo {params[label]} > {out}",
    "echo {label!s} > {out}",
    "echo {label!r} > {out}",
    "echo {params[label]:>60} > {out}",
    "echo {label:s} > {out}",
]


@pytest.mark.parametrize("template", INJECTED_TEMPLATES)
@pytest.mark.parametrize(
    "payload",
    ["x; touch {pwned}; echo", "$(touch {pwned})", "`touch {pwned}`", "x' ; touch {pwned}; '"],
)
def test_no_form_of_a_param_field_lets_a_shell_run_an_injected_command(
    tmp_path: Path, template: str, payload: str
) -> None:
    pwned = tmp_path / "PWNED"
    out = tmp_path / "out.txt"
    label = payload.format(pwned=pwned)
    ctx = make_ctx({"label": label, "out": str(out)})
    Command(template, shell=True).run(ctx)
    assert not pwned.exists()
    assert label.replace("'", "") in out.read_text().replace("'", "")


@pytest.mark.parametrize("shell", ["sh", "/bin/sh", "bash"])
def test_a_shell_script_in_an_args_list_gets_quoted_values(tmp_path: Path, shell: str) -> None:
    pwned = tmp_path / "PWNED"
    ctx = make_ctx({"label": f"x; touch {pwned}; echo"})
    Command([shell, "-c", "echo {params[label]} {label}"]).run(ctx)
    assert not pwned.exists()


def test_an_args_list_passes_an_injected_param_as_one_argument(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pwned = tmp_path / "PWNED"
    label = f"x; touch {pwned}; echo"
    Command("echo {params[label]} {label}").run(make_ctx({"label": label}))
    assert not pwned.exists()
    assert output(caplog) == [f"{label} {label}"]


@pytest.mark.parametrize(
    "template",
    ["echo '{label}'", 'echo "{params[label]}"', 'echo "it\'s {ds}"', "echo 'a'\"{ds}\""],
)
def test_a_field_inside_quotes_in_a_shell_command_is_refused(template: str) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"inside .*quotes.*without quotes"):
        Command(template, shell=True)


def test_quotes_around_other_text_in_a_shell_command_are_fine(
    caplog: pytest.LogCaptureFixture,
) -> None:
    Command("echo 'a b' \"c\" \\' {ds}", shell=True).run(make_ctx())
    assert output(caplog) == ["a b c ' 2025-03-01"]


@pytest.mark.parametrize("flags", [["-c"], ["-lc"], ["-o", "pipefail", "-ec"]])
def test_a_shell_script_after_combined_flags_gets_quoted_values(
    tmp_path: Path, flags: list[str]
) -> None:
    pwned = tmp_path / "PWNED"
    Command(["bash", *flags, "echo {label}"]).run(make_ctx({"label": f"x; touch {pwned}"}))
    assert not pwned.exists()


@pytest.mark.parametrize(
    "args",
    [
        [sys.executable, "-c", "print('{label}')"],
        ["python3", "-c", "print({params[label]})"],
        ["perl", "-e", "print '{label}'"],
        ["node", "-e", "console.log('{label!r}')"],
    ],
)
def test_a_param_in_an_interpreters_code_is_refused(args: list[str]) -> None:
    with pytest.raises(PipelineDefinitionError, match=r"would become code; pass it as an argument"):
        Command(args)


def test_an_interpreters_code_may_use_built_in_names_and_take_params_as_arguments(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pwned = tmp_path / "PWNED"
    label = f"'); open('{pwned}', 'w'); print('"
    code = "import sys; print('{ds}', sys.argv[1])"
    Command([sys.executable, "-c", code, "{label}"]).run(make_ctx({"label": label}))
    assert output(caplog) == [f"2025-03-01 {label}"]
    assert not pwned.exists()
