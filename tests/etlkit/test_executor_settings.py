"""`[run] executor` and `[dask]`: their layers, defaults and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from etlkit.errors import ConfigError
from etlkit.runs.executors import open_executor
from etlkit.settings.config import load_settings


def test_local_executor_and_a_local_cluster_by_default(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={})
    assert settings.run.executor == "local"
    assert settings.dask.address is None
    assert settings.dask.workers == 2
    assert settings.dask.dashboard is False
    explained = {key: (value, source) for key, value, source in settings.explain()}
    assert explained["dask.address"] == ("none", "default")
    assert explained["run.executor"] == ("local", "default")


def test_toml_env_and_cli_layer_the_executor_and_the_address(tmp_path: Path) -> None:
    (tmp_path / "etlkit.toml").write_text(
        '[run]\nexecutor = "dask"\n[dask]\nworkers = 3\ndashboard = true\n'
        'address = "tcp://10.0.0.5:8786"\n',
        encoding="utf-8",
    )
    from_toml = load_settings(tmp_path, env={})
    assert from_toml.run.executor == "dask"
    assert (from_toml.dask.workers, from_toml.dask.dashboard) == (3, True)
    assert from_toml.sources["run.executor"].startswith("etlkit.toml")

    env = {"ETLKIT_RUN__EXECUTOR": "local", "ETLKIT_DASK__ADDRESS": "tcp://127.0.0.1:9999"}
    from_env = load_settings(tmp_path, env=env)
    assert from_env.run.executor == "local"
    assert from_env.dask.address == "tcp://127.0.0.1:9999"
    assert from_env.sources["dask.address"] == "env ETLKIT_DASK__ADDRESS"

    cli = {"run.executor": "dask", "dask.address": "scheduler.internal:8786"}
    from_cli = load_settings(tmp_path, env=env, cli=cli)
    assert from_cli.run.executor == "dask"
    assert from_cli.dask.address == "scheduler.internal:8786"
    assert from_cli.sources["run.executor"] == "cli --executor"
    assert from_cli.sources["dask.address"] == "cli --scheduler-address"


def test_an_empty_or_none_address_means_a_local_cluster(tmp_path: Path) -> None:
    for raw in ("", "none", " None "):
        settings = load_settings(tmp_path, env={"ETLKIT_DASK__ADDRESS": raw})
        assert settings.dask.address is None


def test_a_pipeline_class_cannot_outrank_the_cli_executor(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={}, cli={"run.executor": "dask"})
    layered = settings.with_overrides({"run.executor": "local"}, "pipeline Report")
    assert layered.run.executor == "dask"
    assert layered.dask == settings.dask


def test_an_unknown_executor_lists_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, env={"ETLKIT_RUN__EXECUTOR": "ray"})
    message = str(caught.value)
    assert "run.executor = ray" in message
    assert "env ETLKIT_RUN__EXECUTOR" in message
    assert "local, dask" in message


@pytest.mark.parametrize("address", ["localhost", "tcp://", "8786", "tcp ://host:1"])
def test_a_malformed_address_says_what_an_address_looks_like(tmp_path: Path, address: str) -> None:
    (tmp_path / "etlkit.toml").write_text(f'[dask]\naddress = "{address}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dask\.address = .*etlkit\.toml.*tcp://10\.0\.0\.5"):
        load_settings(tmp_path, env={})


def test_the_grace_for_a_cluster_without_workers_reaches_the_executor(tmp_path: Path) -> None:
    assert load_settings(tmp_path, env={}).dask.no_workers_grace == 60.0
    (tmp_path / "etlkit.toml").write_text("[dask]\nno_workers_grace = 5\n", encoding="utf-8")
    env = {"ETLKIT_RUN__EXECUTOR": "dask", "ETLKIT_DASK__WORKERS": "1"}
    settings = load_settings(tmp_path, env=env)
    assert settings.dask.no_workers_grace == 5.0
    with pytest.raises(ConfigError, match=r"dask\.no_workers_grace = 0\.0 .*> 0"):
        load_settings(tmp_path, env={"ETLKIT_DASK__NO_WORKERS_GRACE": "0"})
    from etlkit.engine.distributed import DaskExecutor

    with open_executor(settings) as opened:  # a LocalCluster, started and closed
        assert isinstance(opened.executor, DaskExecutor)
        assert opened.executor.no_workers_grace == 5.0


def test_a_local_cluster_has_at_least_one_worker(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"dask\.workers = 0 .*>= 1"):
        load_settings(tmp_path, env={"ETLKIT_DASK__WORKERS": "0"})


def test_a_misspelt_dask_key_gets_a_suggestion(tmp_path: Path) -> None:
    (tmp_path / "etlkit.toml").write_text('[dask]\nadress = "tcp://h:1"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"Did you mean 'dask\.address'\?"):
        load_settings(tmp_path, env={})
