from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from etlkit.errors import ConfigError
from etlkit.settings.config import load_settings


def write_toml(project: Path, text: str, name: str = "etlkit.toml") -> Path:
    path = project / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_any_layer(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={})
    assert settings.run.retries == 0
    assert settings.run.chunk_rows == 131_072
    assert settings.run.timeout is None
    assert settings.run.validate is True
    assert settings.duckdb.memory_limit == "2GB"
    assert set(settings.sources.values()) == {"default"}


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.run.retries = 5  # type: ignore[misc]  # assigning to check it is refused


@pytest.mark.parametrize(
    ("layers", "expected", "source"),
    [
        (0, 0, "default"),
        (1, 1, "etlkit.toml"),
        (2, 3, "env ETLKIT_RUN__RETRIES"),
        (3, 2, "pipeline MonthlyReport"),
        (4, 0, "cli --retries"),
    ],
)
def test_each_layer_beats_the_ones_below(
    tmp_path: Path, layers: int, expected: int, source: str
) -> None:
    if layers >= 1:
        write_toml(tmp_path, "[run]\nretries = 1\n")
    settings = load_settings(
        tmp_path,
        env={"ETLKIT_RUN__RETRIES": "3"} if layers >= 2 else {},
        pipeline={"run.retries": 2} if layers >= 3 else None,
        pipeline_name="MonthlyReport",
        cli={"run.retries": 0} if layers >= 4 else None,
    )
    assert settings.run.retries == expected
    assert settings.sources["run.retries"].startswith(source)


def test_toml_source_names_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[run]\nretries = 1\n")
    settings = load_settings(tmp_path, env={})
    assert settings.sources["run.retries"] == f"etlkit.toml ({path.resolve()})"


def test_explicit_config_file_replaces_the_project_one(tmp_path: Path) -> None:
    write_toml(tmp_path, "[run]\nretries = 1\n")
    other = write_toml(tmp_path, "[run]\nretries = 7\n", name="prod.toml")
    settings = load_settings(tmp_path, env={}, config_file=other)
    assert settings.run.retries == 7
    assert settings.sources["run.retries"] == f"prod.toml ({other.resolve()})"


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"Config file .*nope\.toml not found"):
        load_settings(tmp_path, env={}, config_file=tmp_path / "nope.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    write_toml(tmp_path, "[run\nretries = 1\n")
    with pytest.raises(ConfigError, match=r"etlkit\.toml is not valid TOML"):
        load_settings(tmp_path, env={})


def test_explain_lists_every_key_sorted_with_value_and_source(tmp_path: Path) -> None:
    write_toml(tmp_path, '[duckdb]\nmemory_limit = "8GB"\n')
    settings = load_settings(
        tmp_path,
        env={"ETLKIT_RUN__VALIDATE": "no"},
        pipeline={"run.timeout": 30},
        pipeline_name="MonthlyReport",
        cli={"run.chunk_rows": 1000},
    )
    rows = settings.explain()
    keys = [key for key, _, _ in rows]
    assert keys == sorted(keys)
    assert len(keys) == len(settings.sources) == 34
    explained = {key: (value, source) for key, value, source in rows}
    assert explained["duckdb.memory_limit"][0] == "8GB"
    assert explained["duckdb.memory_limit"][1].startswith("etlkit.toml (")
    assert explained["run.validate"] == ("false", "env ETLKIT_RUN__VALIDATE")
    assert explained["run.timeout"] == ("30.0", "pipeline MonthlyReport")
    assert explained["run.chunk_rows"] == ("1000", "cli --chunk-rows")
    assert explained["run.retries"] == ("0", "default")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_env_booleans(tmp_path: Path, raw: str, expected: bool) -> None:
    settings = load_settings(tmp_path, env={"ETLKIT_RUN__VALIDATE": raw})
    assert settings.run.validate is expected


def test_env_numbers_and_optional_none(tmp_path: Path) -> None:
    env = {"ETLKIT_RUN__RETRY_DELAY": "2.5", "ETLKIT_RUN__CHANNEL_DEPTH": "8"}
    settings = load_settings(tmp_path, env={**env, "ETLKIT_RUN__TIMEOUT": "90"})
    assert settings.run.retry_delay == 2.5
    assert settings.run.channel_depth == 8
    assert settings.run.timeout == 90.0
    for none in ("", "none", "None"):
        settings = load_settings(
            tmp_path, env={"ETLKIT_RUN__TIMEOUT": none}, pipeline={"run.timeout": None}
        )
        assert settings.run.timeout is None


def test_unknown_toml_key_suggests_the_closest(tmp_path: Path) -> None:
    write_toml(tmp_path, "[run]\nretires = 1\n")
    with pytest.raises(
        ConfigError, match=r"Unknown setting 'retires' in \[run\] in etlkit\.toml .*'run\.retries'"
    ):
        load_settings(tmp_path, env={})


def test_unknown_toml_section_suggests_the_closest(tmp_path: Path) -> None:
    write_toml(tmp_path, "[rum]\nretries = 1\n")
    with pytest.raises(ConfigError, match=r"Unknown section \[rum\].*Did you mean '\[run\]'"):
        load_settings(tmp_path, env={})


def test_top_level_toml_key_points_to_its_section(tmp_path: Path) -> None:
    write_toml(tmp_path, "retries = 1\n")
    with pytest.raises(ConfigError, match=r"top-level key 'retries'.*'run\.retries'"):
        load_settings(tmp_path, env={})


def test_unknown_env_key_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"Unknown environment variable ETLKIT_RUN__RETRYS .*\. "
        r"Did you mean 'ETLKIT_RUN__RETRIES'\?",
    ):
        load_settings(tmp_path, env={"ETLKIT_RUN__RETRYS": "3"})


def test_unknown_mapping_key_names_its_layer(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'retries' from cli\. Did you mean 'run\.retries'"):
        load_settings(tmp_path, env={}, cli={"retries": 0})
    with pytest.raises(ConfigError, match=r"from pipeline MonthlyReport\. Did you mean"):
        load_settings(
            tmp_path, env={}, pipeline={"run.chunkrows": 5}, pipeline_name="MonthlyReport"
        )


def test_connections_are_skipped(tmp_path: Path) -> None:
    write_toml(tmp_path, '[connections.warehouse]\nurl = "postgresql://db/x"\n')
    env = {"ETLKIT_CONN_WAREHOUSE": "postgresql://u:secret@db/x", "HOME": "/home/x"}
    settings = load_settings(tmp_path, env=env)
    assert not any("secret" in value for _, value, _ in settings.explain())


def test_bad_value_names_key_value_source_and_type(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"Invalid value 'many' for run\.retries \(from env ETLKIT_RUN__RETRIES\): "
        r"expected an integer",
    ):
        load_settings(tmp_path, env={"ETLKIT_RUN__RETRIES": "many"})


def test_bad_values_from_toml_and_mappings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'maybe' for run\.validate .*expected a boolean"):
        load_settings(tmp_path, env={"ETLKIT_RUN__VALIDATE": "maybe"})
    with pytest.raises(ConfigError, match=r"True for run\.retries \(from cli --retries\)"):
        load_settings(tmp_path, env={}, cli={"run.retries": True})
    with pytest.raises(ConfigError, match=r"run\.timeout .*expected a number or none"):
        load_settings(tmp_path, env={"ETLKIT_RUN__TIMEOUT": "soon"})
    write_toml(tmp_path, "[duckdb]\nmemory_limit = 2\n")
    with pytest.raises(ConfigError, match=r"duckdb\.memory_limit \(from etlkit\.toml .*a string"):
        load_settings(tmp_path, env={})


@pytest.mark.parametrize(
    ("key", "raw", "bound"),
    [
        ("run.chunk_rows", 0, ">= 1"),
        ("run.chunk_bytes", 512, ">= 1024"),
        ("run.channel_depth", 0, ">= 1"),
        ("run.retries", -1, ">= 0"),
        ("run.retry_delay", -0.5, ">= 0"),
        ("run.timeout", 0, "> 0"),
        ("duckdb.threads", -2, ">= 0"),
    ],
)
def test_out_of_range_values_are_refused(tmp_path: Path, key: str, raw: int, bound: str) -> None:
    with pytest.raises(
        ConfigError, match=rf"Setting {key} = .* \(from cli --.*\) is out of range: .*{bound}"
    ):
        load_settings(tmp_path, env={}, cli={key: raw})


def test_only_the_final_value_is_range_checked(tmp_path: Path) -> None:
    write_toml(tmp_path, "[run]\nchunk_rows = 0\n")
    assert load_settings(tmp_path, env={}, cli={"run.chunk_rows": 10}).run.chunk_rows == 10


def test_relative_paths_resolve_against_the_project_dir(tmp_path: Path) -> None:
    project = tmp_path.resolve()
    settings = load_settings(tmp_path, env={})
    state = project / ".etlkit"
    assert settings.paths.state_dir == str(state)
    assert settings.paths.staging_root == str(state / "staging")
    assert settings.paths.store == str(state / "etlkit.sqlite")
    assert settings.paths.logs_dir == str(state / "logs")
    assert settings.paths.pipelines_dir == str(project / "pipelines")
    assert settings.duckdb.temp_directory == str(state / "duckdb_tmp")
    assert Path(settings.paths.state_dir).is_absolute()


def test_explicit_paths_relative_absolute_and_nested(tmp_path: Path) -> None:
    project = tmp_path.resolve()
    write_toml(tmp_path, '[paths]\nstate_dir = "var/state"\nlogs_dir = "../logs"\n')
    settings = load_settings(tmp_path, env={"ETLKIT_PATHS__STORE": str(project / "abs.sqlite")})
    assert settings.paths.state_dir == str(project / "var" / "state")
    assert settings.paths.staging_root == str(project / "var" / "state" / "staging")
    assert settings.paths.logs_dir == str(project.parent / "logs")
    assert settings.paths.store == str(project / "abs.sqlite")


def test_fsspec_urls_are_kept_as_given(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={"ETLKIT_PATHS__STAGING_ROOT": "s3://b/x"})
    assert settings.paths.staging_root == "s3://b/x"
    assert settings.sources["paths.staging_root"] == "env ETLKIT_PATHS__STAGING_ROOT"
    settings = load_settings(tmp_path, env={}, cli={"paths.state_dir": "s3://bucket/state/"})
    assert settings.paths.state_dir == "s3://bucket/state/"
    assert settings.paths.staging_root == "s3://bucket/state/staging"
