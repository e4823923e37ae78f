"""etlkit's public API: `__all__` is sorted, complete and every name resolves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import etlkit as ek


def test_all_is_sorted_and_unique() -> None:
    assert list(ek.__all__) == sorted(set(ek.__all__))


def test_every_public_name_resolves() -> None:
    for name in ek.__all__:
        assert getattr(ek, name) is not None, name


def test_every_error_class_is_public() -> None:
    from etlkit import errors

    classes = [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, Exception) and not name.startswith("_")
    ]
    assert sorted(set(classes) - set(ek.__all__)) == []


def test_importing_etlkit_loads_no_heavy_library() -> None:
    code = (
        "import sys, etlkit, etlkit.cli; "
        "print(sorted(m for m in ('polars', 'pyarrow', 'duckdb', 'pandera') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_etlkit_run_loads_neither_the_scheduler_nor_the_mail_and_http_clients(
    tmp_path: Path,
) -> None:
    (tmp_path / "one.py").write_text(
        "import etlkit as ek\n\n"
        "class Touch(ek.Task):\n"
        "    def run(self, ctx):\n"
        "        open(ctx.params['out'], 'w').close()\n\n"
        "class One(ek.Pipeline):\n"
        "    params = {'out': ''}\n"
        "    touch = Touch()\n"
    )
    out = tmp_path / "touched"
    code = (
        "import sys; from etlkit import cli; "
        f"code = cli.main(['--project', {str(tmp_path)!r}, 'run', {str(tmp_path / 'one.py')!r}, "
        f"'--progress', 'none', '--param', 'out={out}']); "
        "print(code, sorted(m for m in sys.modules if m in ('croniter', 'smtplib', "
        "'urllib.request', 'httpx') or m.startswith('etlkit.scheduling')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "0 []", done.stderr
    assert out.exists()


def test_command_and_sensors_named_in_the_readme_are_exported_and_loaded_on_first_use() -> None:
    code = (
        "import sys, etlkit as ek; "
        "loaded = [m for m in ('etlkit.model.commands', 'etlkit.model.sensors') "
        "if m in sys.modules]; "
        "from etlkit.model.commands import Command; "
        "from etlkit.model.sensors import FileSensor, RunSensor; "
        "print(loaded, ek.Command is Command, ek.FileSensor is FileSensor, "
        "ek.RunSensor is RunSensor)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] True True True"
    assert {"Command", "FileSensor", "RunSensor"} <= set(ek.__all__)
