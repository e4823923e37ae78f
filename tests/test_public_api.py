"""etlkit's public API: `__all__` is sorted, complete and every name resolves."""

from __future__ import annotations

import subprocess
import sys

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
