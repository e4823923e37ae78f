"""The Pipeline class: names, nodes, inheritance, settings and params, loading and discovery."""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import ClassVar

import polars as pl
import pyarrow as pa
import pytest

import etlkit as ek
from etlkit.errors import ConfigError, PipelineDefinitionError, PipelineNotFoundError
from etlkit.model.discovery import discover, load_pipeline
from etlkit.model.pipeline import parse_logical_date, snake_case
from etlkit.storage.staging import Staging
from etlkit.testing import MemorySink, MemorySource

TABLE = pa.table({"invoice_id": [1, 2], "amount": [10.0, 20.0]})


class Copy(ek.Transform):  # type: ignore[type-arg]  # untyped on purpose: no models
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch


class Double(ek.Transform):  # type: ignore[type-arg]  # untyped on purpose: no models
    def process(self, batch: pl.DataFrame, ctx: ek.Context) -> pl.DataFrame:
        return batch.with_columns(pl.col("amount") * 2)


# -- names and nodes -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("class_name", "expected"),
    [
        ("MonthlyReport", "monthly_report"),
        ("Daily", "daily"),
        ("TPCHQ1", "tpchq1"),
        ("LoadV2Data", "load_v2_data"),
        ("already_snake", "already_snake"),
    ],
)
def test_snake_case_of_class_names(class_name: str, expected: str) -> None:
    assert snake_case(class_name) == expected


def test_pipeline_name_is_the_class_name_in_snake_case() -> None:
    class MonthlyReport(ek.Pipeline):
        bills = MemorySource(TABLE)

    assert MonthlyReport.name == "monthly_report"
    assert MonthlyReport.graph().pipeline == "monthly_report"


def test_explicit_name_wins_and_is_not_inherited() -> None:
    class Billing(ek.Pipeline):
        name = "billing_v2"
        bills = MemorySource(TABLE)

    class NightlyBilling(Billing):
        pass

    assert Billing.name == "billing_v2"
    assert NightlyBilling.name == "nightly_billing"


def test_nodes_are_the_node_attributes_in_declaration_order() -> None:
    class Report(ek.Pipeline):
        schedule = "@daily"
        retries = 1
        billing = MemorySource(TABLE)
        monthly = Copy(billing)
        label = "not a node"
        report = MemorySink(monthly)

    assert list(Report.nodes) == ["billing", "monthly", "report"]
    assert Report.nodes["monthly"] is Report.monthly
    assert [node.name for node in Report.nodes.values()] == ["billing", "monthly", "report"]


class Base(ek.Pipeline):
    bills = MemorySource(TABLE)
    doubled = Double(bills)
    out = MemorySink(doubled)


def test_subclass_inherits_the_nodes_of_its_base() -> None:
    class Child(Base):
        extra = MemorySink(Base.bills)

    assert list(Child.nodes) == ["bills", "doubled", "out", "extra"]
    assert Child.nodes["bills"] is Base.bills
    assert Child.graph().consumers["bills"] == ("doubled", "extra")


def test_subclass_overriding_a_node_rewires_its_consumers() -> None:
    class Override(Base):
        bills = MemorySource(pa.table({"invoice_id": [7], "amount": [1.0]}))

    assert Override.nodes["bills"] is Override.bills
    assert Override.nodes["bills"] is not Base.bills
    assert Base.nodes["bills"] is Base.bills  # the base is untouched
    graph = Override.graph()
    assert graph.inputs["doubled"] == ("bills",)
    assert graph.nodes["bills"] is Override.bills


def test_overriding_through_two_levels_rewires_to_the_newest_node() -> None:
    class Middle(Base):
        bills = MemorySource(TABLE)

    class Leaf(Middle):
        bills = MemorySource(TABLE)

    graph = Leaf.graph()
    assert graph.nodes["bills"] is Leaf.bills
    assert graph.inputs["doubled"] == ("bills",)


def test_subclass_removes_a_node_by_assigning_something_else() -> None:
    class WithoutSink(Base):
        out = None  # type: ignore[assignment]  # removes the node on purpose

    assert list(WithoutSink.nodes) == ["bills", "doubled"]


def test_removing_a_node_that_others_read_is_reported() -> None:
    class WithoutSource(Base):
        bills = None  # type: ignore[assignment]  # removes the node on purpose

    with pytest.raises(
        PipelineDefinitionError,
        match=r"node 'doubled' reads from <MemorySource bills>, which is not a node",
    ):
        WithoutSource.graph()


# -- settings and params ---------------------------------------------------------------------


def test_settings_overrides_are_the_run_attributes_the_class_sets() -> None:
    class Tuned(ek.Pipeline):
        retries = 2
        chunk_rows = 1_000
        timeout = 60.0
        validate = False
        bills = MemorySource(TABLE)

    class MoreTuned(Tuned):
        retries = 5

    assert Tuned.settings_overrides() == {
        "run.retries": 2,
        "run.chunk_rows": 1_000,
        "run.timeout": 60.0,
        "run.validate": False,
    }
    assert MoreTuned.settings_overrides()["run.retries"] == 5
    assert MoreTuned.settings_overrides()["run.chunk_rows"] == 1_000
    assert Base.settings_overrides() == {}


def test_settings_overrides_feed_the_pipeline_layer_of_settings(tmp_path: Path) -> None:
    class Tuned(ek.Pipeline):
        retries = 2
        chunk_rows = 1_000
        bills = MemorySource(TABLE)

    settings = ek.load_settings(
        tmp_path, env={}, pipeline=Tuned.settings_overrides(), pipeline_name=Tuned.__name__
    )
    assert settings.run.retries == 2
    assert settings.run.chunk_rows == 1_000
    assert settings.sources["run.retries"] == "pipeline Tuned"


class Regional(ek.Pipeline):
    params: ClassVar[Mapping[str, str]] = {"region": "eu", "tier": "gold"}
    bills = MemorySource(TABLE)


def test_resolve_params_fills_declared_defaults() -> None:
    assert Regional.resolve_params({}) == {"region": "eu", "tier": "gold"}
    assert Regional.resolve_params({"region": "us"}) == {"region": "us", "tier": "gold"}


def test_unknown_param_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "Pipeline 'regional' has no param 'regoin'; it declares 'region' and 'tier' "
            "(add it to the class's `params`). Did you mean 'region'?"
        ),
    ):
        Regional.resolve_params({"regoin": "us"})


def test_param_on_a_pipeline_without_params_says_none_are_declared() -> None:
    with pytest.raises(ConfigError, match=r"has no param 'region'; it declares none"):
        Base.resolve_params({"region": "us"})


# -- logical dates ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
        ("2025-03-01T02:30:00", datetime(2025, 3, 1, 2, 30, tzinfo=UTC)),
        (
            "2025-03-01T02:30:00+01:00",
            datetime(2025, 3, 1, 2, 30, tzinfo=timezone(timedelta(hours=1))),
        ),
        ("2025-03-01T02:30:00Z", datetime(2025, 3, 1, 2, 30, tzinfo=UTC)),
        (datetime(2025, 3, 1, 2, 30), datetime(2025, 3, 1, 2, 30, tzinfo=UTC)),
        (
            datetime(2025, 3, 1, tzinfo=timezone(timedelta(hours=-5))),
            datetime(2025, 3, 1, tzinfo=timezone(timedelta(hours=-5))),
        ),
    ],
)
def test_logical_date_is_parsed_and_naive_means_utc(
    value: str | datetime, expected: datetime
) -> None:
    parsed = parse_logical_date(value)
    assert parsed == expected
    assert parsed.utcoffset() == expected.utcoffset()


def test_no_logical_date_means_today_at_midnight_utc() -> None:
    before = datetime.now(UTC)
    parsed = parse_logical_date(None)
    after = datetime.now(UTC)
    assert parsed.tzinfo is UTC
    assert (parsed.hour, parsed.minute, parsed.second, parsed.microsecond) == (0, 0, 0, 0)
    assert parsed.date() in {before.date(), after.date()}


@pytest.mark.parametrize("text", ["yesterday", "2025-13-01", "01/03/2025", ""])
def test_bad_logical_date_is_a_config_error(text: str) -> None:
    with pytest.raises(
        ConfigError,
        match=rf"Logical date {re.escape(repr(text))} is not a date: use YYYY-MM-DD or an ISO",
    ):
        parse_logical_date(text)


# -- loading pipelines -----------------------------------------------------------------------


def pipeline_file(directory: Path, filename: str, *classes: str, extra: str = "") -> Path:
    """Write a pipeline module defining one small pipeline per class name."""
    body = [
        "import pyarrow as pa",
        "import etlkit as ek",
        "from etlkit.testing import MemorySink, MemorySource",
        textwrap.dedent(extra),
    ]
    for cls in classes:
        body += [
            f"class {cls}(ek.Pipeline):",
            "    bills = MemorySource(pa.table({'a': [1]}))",
            "    out = MemorySink(bills)",
            "",
        ]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / filename
    path.write_text("\n".join(body), encoding="utf-8")
    return path


@pytest.fixture
def pipelines_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "pipelines"
    pipeline_file(directory, "monthly_report.py", "MonthlyReport")
    pipeline_file(directory, "billing.py", "Billing", "BillingAudit")
    pipeline_file(directory, "claims.py", "InsuranceClaims")
    return directory


def test_load_pipeline_by_file_path(pipelines_dir: Path) -> None:
    cls = load_pipeline(str(pipelines_dir / "monthly_report.py"), pipelines_dir)
    assert cls.__name__ == "MonthlyReport"
    assert cls.graph().order == ("bills", "out")


def test_load_pipeline_by_file_path_and_class_name(pipelines_dir: Path) -> None:
    cls = load_pipeline(f"{pipelines_dir / 'billing.py'}:BillingAudit", pipelines_dir)
    assert cls.__name__ == "BillingAudit"
    cls = load_pipeline(f"{pipelines_dir / 'billing.py'}:billing_audit", pipelines_dir)
    assert cls.__name__ == "BillingAudit"


def test_file_with_several_pipelines_picks_the_one_named_like_the_file(
    pipelines_dir: Path,
) -> None:
    assert load_pipeline(str(pipelines_dir / "billing.py"), pipelines_dir).__name__ == "Billing"


def test_file_with_several_pipelines_and_no_match_asks_for_a_class(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "many.py", "First", "Second")
    with pytest.raises(
        PipelineNotFoundError,
        match=re.escape(
            f"{path} defines several pipelines 'First' and 'Second'; name one as '{path}:ClassName'"
        ),
    ):
        load_pipeline(str(path), tmp_path)


def test_unknown_class_in_a_file_lists_what_it_defines(pipelines_dir: Path) -> None:
    path = pipelines_dir / "billing.py"
    with pytest.raises(
        PipelineNotFoundError,
        match=re.escape(f"No pipeline 'Audit' in {path}; it defines 'Billing' and 'BillingAudit'"),
    ):
        load_pipeline(f"{path}:Audit", pipelines_dir)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(PipelineNotFoundError, match=r"Pipeline file .*nope\.py does not exist"):
        load_pipeline(str(tmp_path / "nope.py"), tmp_path)


def test_file_without_pipelines_says_so(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "helpers.py")
    with pytest.raises(
        PipelineNotFoundError, match=r"helpers\.py defines no ek\.Pipeline subclass"
    ):
        load_pipeline(str(path), tmp_path)


@pytest.mark.parametrize(
    ("ref", "class_name"),
    [
        ("monthly_report", "MonthlyReport"),  # file stem and pipeline name
        ("billing", "Billing"),  # file stem of a file with several pipelines
        ("billing_audit", "BillingAudit"),  # pipeline name in a file named otherwise
        ("BillingAudit", "BillingAudit"),  # class name
        ("claims", "InsuranceClaims"),  # file stem of a pipeline named otherwise
        ("insurance_claims", "InsuranceClaims"),
    ],
)
def test_load_pipeline_by_name_in_the_pipelines_dir(
    pipelines_dir: Path, ref: str, class_name: str
) -> None:
    assert load_pipeline(ref, pipelines_dir).__name__ == class_name


def test_unknown_name_lists_the_pipelines_and_suggests_one(pipelines_dir: Path) -> None:
    with pytest.raises(
        PipelineNotFoundError,
        match=re.escape(
            f"No pipeline named 'monthly_reprot' in {pipelines_dir}/ (found: 'billing', "
            "'billing_audit', 'insurance_claims' and 'monthly_report'). "
            "Did you mean 'monthly_report'?"
        ),
    ):
        load_pipeline("monthly_reprot", pipelines_dir)


def test_unknown_name_mentions_files_that_failed_to_import(pipelines_dir: Path) -> None:
    (pipelines_dir / "broken.py").write_text("raise RuntimeError('boom')\n", encoding="utf-8")
    with pytest.raises(
        PipelineNotFoundError, match=r"failed to import \(see `etlkit list`\): 'broken\.py'\."
    ):
        load_pipeline("weekly", pipelines_dir)


def test_unknown_name_without_a_pipelines_dir_finds_none(tmp_path: Path) -> None:
    with pytest.raises(PipelineNotFoundError, match=r"\(found: none\)"):
        load_pipeline("weekly", tmp_path / "missing")


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An importable package `etlkit_test_pkg` with a pipeline module, removed afterwards."""
    name = "etlkit_test_pkg"
    root = tmp_path / "src"
    pipeline_file(root / name, "__init__.py")
    pipeline_file(root / name, "shared.py", "Shared")
    pipeline_file(root / name, "nightly.py", "Nightly", extra=f"from {name}.shared import Shared\n")
    pipeline_file(root / name, "billing.py", "BillingAudit", "Billing")
    pipeline_file(root / name, "broken.py", "Broken", extra="raise RuntimeError('boom')\n")
    pipeline_file(root / name, "needs_dep.py", "NeedsDep", extra="import etlkit_missing_dep\n")
    monkeypatch.syspath_prepend(str(root))
    yield name
    for module in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[module]


def test_load_pipeline_by_dotted_module_path(package: str, tmp_path: Path) -> None:
    cls = load_pipeline(f"{package}.nightly", tmp_path)
    assert cls.__name__ == "Nightly"  # Shared is imported there, not defined: not a candidate


def test_load_pipeline_by_module_path_and_class_name(package: str, tmp_path: Path) -> None:
    assert load_pipeline(f"{package}.shared:Shared", tmp_path).__name__ == "Shared"


def test_module_with_several_pipelines_picks_the_one_named_like_the_module(
    package: str, tmp_path: Path
) -> None:
    assert load_pipeline(f"{package}.billing", tmp_path).__name__ == "Billing"


def test_module_raising_on_import_is_a_definition_error_naming_the_module(
    package: str, tmp_path: Path
) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=re.escape(
            f"Pipeline 'broken' is invalid: importing module {package}.broken failed: "
            "RuntimeError: boom"
        ),
    ):
        load_pipeline(f"{package}.broken", tmp_path)


def test_module_missing_a_dependency_is_a_definition_error_not_a_missing_pipeline(
    package: str, tmp_path: Path
) -> None:
    with pytest.raises(
        PipelineDefinitionError,
        match=r"importing module etlkit_test_pkg\.needs_dep failed: ModuleNotFoundError: "
        r"No module named 'etlkit_missing_dep'",
    ):
        load_pipeline(f"{package}.needs_dep", tmp_path)


def test_unknown_module_in_a_known_package_is_not_found(package: str, tmp_path: Path) -> None:
    with pytest.raises(PipelineNotFoundError, match=rf"Cannot import module '{package}\.weekly'"):
        load_pipeline(f"{package}.weekly", tmp_path)


def test_unknown_module_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(
        PipelineNotFoundError, match=r"Cannot import module 'etlkit_no_such_pkg\.nightly'"
    ):
        load_pipeline("etlkit_no_such_pkg.nightly", tmp_path)


def test_file_raising_on_import_is_a_definition_error_naming_the_file(tmp_path: Path) -> None:
    path = pipeline_file(tmp_path, "broken.py", "Broken", extra="raise RuntimeError('boom')\n")
    with pytest.raises(
        PipelineDefinitionError,
        match=re.escape(
            f"Pipeline 'broken' is invalid: importing {path} failed: RuntimeError: boom"
        ),
    ):
        load_pipeline(str(path), tmp_path)
    assert not any(getattr(m, "__file__", None) == str(path) for m in list(sys.modules.values()))


def test_file_with_a_syntax_error_is_a_definition_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "typo.py"
    path.write_text("class Typo(ek.Pipeline)\n", encoding="utf-8")
    with pytest.raises(PipelineDefinitionError, match=rf"importing {re.escape(str(path))} failed"):
        load_pipeline(str(path), tmp_path)


def test_node_constructor_error_on_import_names_the_file(tmp_path: Path) -> None:
    extra = """
    class Copy(ek.Transform):
        def process(self, batch, ctx):
            return batch

    class Bad(ek.Pipeline):
        oops = Copy(42)
    """
    path = pipeline_file(tmp_path, "bad.py", extra=extra)
    with pytest.raises(
        PipelineDefinitionError,
        match=rf"Pipeline 'bad' is invalid: importing {re.escape(str(path))} failed: "
        r"Copy got an input of type int",
    ):
        load_pipeline(str(path), tmp_path)


# -- discovery -------------------------------------------------------------------------------


def test_discover_reports_a_broken_file_and_loads_the_others(pipelines_dir: Path) -> None:
    (pipelines_dir / "broken.py").write_text("import no_such_module_xyz\n", encoding="utf-8")
    pipeline_file(pipelines_dir, "_private.py", "Private")
    (pipelines_dir / "notes.txt").write_text("not python", encoding="utf-8")

    found = discover(pipelines_dir)

    assert [d.path.name for d in found] == [
        "billing.py",
        "broken.py",
        "claims.py",
        "monthly_report.py",
    ]
    by_file = {d.path.name: d for d in found}
    broken = by_file["broken.py"]
    assert broken.pipelines == ()
    assert isinstance(broken.error, PipelineDefinitionError)
    assert "No module named 'no_such_module_xyz'" in str(broken.error)
    assert [c.__name__ for c in by_file["billing.py"].pipelines] == ["Billing", "BillingAudit"]
    assert all(d.error is None for name, d in by_file.items() if name != "broken.py")


def test_discover_of_an_empty_folder_finds_nothing(tmp_path: Path) -> None:
    assert discover(tmp_path) == []


# -- running ---------------------------------------------------------------------------------


def test_run_streams_rows_from_source_to_sink_and_stages_the_source(
    settings: ek.Settings, billing_table: pa.Table
) -> None:
    class Doubling(ek.Pipeline):
        bills = MemorySource(billing_table, chunk_rows=4)
        doubled = Double(bills)
        out = MemorySink(doubled)

    result = Doubling.run(date="2025-03-01", settings=settings)

    assert result.state == "success", result.error
    assert result.pipeline == "doubling"
    assert Doubling.out.table().column("amount").to_pylist() == [20.0 * (i + 1) for i in range(10)]
    manifest = Staging(settings.paths.staging_root).manifest("doubling", result.run_id, "bills")
    assert manifest is not None
    assert manifest.rows == 10


def test_run_of_an_overriding_subclass_reads_the_new_source(settings: ek.Settings) -> None:
    class Override(Base):
        bills = MemorySource(pa.table({"invoice_id": [7], "amount": [1.5]}))
        out = MemorySink("doubled")
        totals = ek.Sql("select sum(amount) as total from {doubled} where '{region}' = 'eu'")
        total_out = MemorySink(totals)
        params: ClassVar[Mapping[str, str]] = {"region": "eu"}

    result = Override.run(date="2025-03-01", settings=settings)

    assert result.state == "success", result.error
    assert Override.out.table().to_pylist() == [{"invoice_id": 7, "amount": 3.0}]
    assert Override.total_out.table().to_pylist() == [{"total": 3.0}]
    assert Base.bills.reads == 0


def test_run_with_an_undeclared_param_fails_before_anything_runs(settings: ek.Settings) -> None:
    class Plain(ek.Pipeline):
        bills = MemorySource(TABLE)
        out = MemorySink(bills)

    with pytest.raises(ConfigError, match=r"Pipeline 'plain' has no param 'region'"):
        Plain.run(date="2025-03-01", params={"region": "eu"}, settings=settings)
    assert Plain.bills.reads == 0
    assert not Path(settings.paths.staging_root).exists()
