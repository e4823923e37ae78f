"""What starting a command costs: the libraries a run loads only when it uses them, and the
objects the `etlkit` command freezes before its run (issue 21, "process start").

Each check runs in a fresh interpreter and reads `sys.modules` or the collector's state: no
timing, so the verdicts do not move with the machine's load.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

#: Libraries a run of a pipeline with one `Task` uses none of.
UNUSED_BY_A_TASK = (
    "asyncio",
    "duckdb",
    "fsspec",
    "httpx",
    "pandas",
    "pandera",
    "pyarrow.compute",
    "pyarrow.parquet",
    "rich",
)

ONE_TASK = (
    "import etlkit as ek\n\n"
    "class Touch(ek.Task):\n"
    "    def run(self, ctx):\n"
    "        open(ctx.params['out'], 'w').close()\n\n"
    "class One(ek.Pipeline):\n"
    "    params = {'out': ''}\n"
    "    touch = Touch()\n"
)


def _python(code: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, cwd=cwd
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def one_task(tmp_path: Path) -> tuple[Path, list[str]]:
    """A project with a one-Task pipeline, and the arguments that run it."""
    (tmp_path / "one.py").write_text(ONE_TASK)
    argv = [
        "--project",
        str(tmp_path),
        "run",
        str(tmp_path / "one.py"),
        "--progress",
        "none",
        "--param",
        f"out={tmp_path / 'touched'}",
    ]
    return tmp_path, argv


def test_a_task_run_loads_no_library_it_does_not_use(one_task: tuple[Path, list[str]]) -> None:
    project, argv = one_task
    code = (
        "import sys; from etlkit import cli; "
        f"code = cli.main({argv!r}); "
        f"print(code, sorted(m for m in {UNUSED_BY_A_TASK!r} if m in sys.modules))"
    )
    assert _python(code, project) == "0 []"
    assert (project / "touched").exists()


def test_the_etlkit_command_freezes_what_it_imported_before_the_run(
    one_task: tuple[Path, list[str]],
) -> None:
    project, argv = one_task
    # as the `etlkit` script calls it: main() reads the command line
    code = (
        "import gc, sys; from etlkit import cli; "
        f"sys.argv = ['etlkit', *{argv!r}]; code = cli.main(); "
        "print(code, gc.get_freeze_count() > 0)"
    )
    assert _python(code, project) == "0 True"


def test_main_called_from_a_program_freezes_nothing(one_task: tuple[Path, list[str]]) -> None:
    project, argv = one_task
    code = (
        "import gc; from etlkit import cli; "
        f"code = cli.main({argv!r}); print(code, gc.get_freeze_count())"
    )
    assert _python(code, project) == "0 0"


def test_a_local_staging_root_resolves_as_fsspec_does_without_loading_it(tmp_path: Path) -> None:
    roots = ["data/staging", "rel/dir/", "", "/", str(tmp_path / "staging"), "a/../b"]
    code = (
        "import sys; from etlkit.storage.root import StagingRoot; "
        f"roots = [StagingRoot(r) for r in {roots!r}]; "
        "loaded = 'fsspec' in sys.modules; "
        "import fsspec; "
        f"same = [(s.root, s.protocols, s.local, type(s.fs)) == "
        "(fs_p[1].rstrip('/'), fs_p[0].protocol, True, type(fs_p[0])) "
        f"for s, fs_p in zip(roots, [fsspec.core.url_to_fs(r) for r in {roots!r}])]; "
        "print(loaded, same)"
    )
    assert _python(code, tmp_path) == f"False {[True] * len(roots)}"


@pytest.mark.parametrize("root", ["~/staging", "./staging", ".", "file:///tmp/staging"])
def test_other_local_roots_still_go_through_fsspec(root: str, tmp_path: Path) -> None:
    code = (
        "import fsspec; from etlkit.storage.root import StagingRoot; "
        f"s = StagingRoot({root!r}); fs, path = fsspec.core.url_to_fs({root!r}); "
        "print(s.root == path.rstrip('/'), s.local)"
    )
    assert _python(code, tmp_path) == "True True"


@pytest.mark.parametrize("command", ["list", "validate"])
def test_list_and_validate_freeze_what_they_loaded(command: str, tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "one.py").write_text(ONE_TASK)
    code = (
        "import gc, sys; from etlkit import cli; "
        f"sys.argv = ['etlkit', '--project', {str(tmp_path)!r}, {command!r}]; "
        "code = cli.main(); print(code, gc.get_freeze_count() > 0)"
    )
    assert _python(code, tmp_path) == "0 True"
