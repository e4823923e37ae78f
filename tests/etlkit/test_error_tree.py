"""Every exception etlkit raises is in the one tree, importable from etlkit.errors, and pickles."""

from __future__ import annotations

import ast
import importlib
import inspect
import pickle
import pkgutil
from pathlib import Path
from typing import Any

import pytest

import connectors
import etlkit
from etlkit import errors

MIXINS = {errors.TransientError, errors.PermanentError}


def every_module() -> None:
    """Import every module of etlkit and connectors, so that every exception class exists."""
    for package in (etlkit, connectors):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)


def subclasses(cls: type[BaseException]) -> set[type[BaseException]]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def raised_by_etlkit() -> list[type[BaseException]]:
    every_module()
    classes: set[type[BaseException]] = set()
    for root in (errors.EtlkitError, *MIXINS):
        classes |= {root} | subclasses(root)
    named = {
        value
        for module in (etlkit, connectors)
        for value in vars(module).values()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    mine = {c for c in classes | named if c.__module__.startswith(("etlkit", "connectors"))}
    return sorted(mine, key=lambda c: (c.__module__, c.__qualname__))


def sample(name: str, annotation: str) -> Any:
    """A value for a constructor parameter, from its annotation's text."""
    if annotation.startswith("str"):
        return f"the {name}"
    if annotation.startswith("int"):
        return 3
    if annotation.startswith("float"):
        return 2.5
    if annotation.startswith(("Iterable", "Sequence", "list")):
        return ["a", "b"]
    raise AssertionError(f"no sample value for {name}: {annotation}; add one to sample()")


def instance(cls: type[BaseException]) -> BaseException:
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return cls("the message")
    args = [
        sample(p.name, str(p.annotation)) for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    kwargs = {
        p.name: sample(p.name, str(p.annotation)) for p in parameters if p.kind is p.KEYWORD_ONLY
    }
    return cls(*args, **kwargs)


def test_every_exception_class_of_etlkit_and_its_connectors_is_under_etlkit_error() -> None:
    private = {c for c in raised_by_etlkit() if c.__name__.startswith("_")}
    outside = [
        f"{c.__module__}.{c.__qualname__}"
        for c in raised_by_etlkit()
        if c not in MIXINS | private and not issubclass(c, errors.EtlkitError)
    ]
    assert outside == []


def test_every_exception_class_of_etlkit_is_importable_from_etlkit_errors() -> None:
    core = [c for c in raised_by_etlkit() if c.__module__.startswith("etlkit")]
    elsewhere = [
        f"{c.__module__}.{c.__qualname__}"
        for c in core
        if not c.__name__.startswith("_") and getattr(errors, c.__name__, None) is not c
    ]
    assert elsewhere == []


@pytest.mark.parametrize(
    "cls",
    [c for c in raised_by_etlkit() if not c.__name__.startswith("_")],
    ids=lambda c: c.__qualname__,
)
def test_every_exception_round_trips_through_pickle_with_its_context(
    cls: type[BaseException],
) -> None:
    error = instance(cls)

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is cls
    assert str(copy) == str(error)
    assert copy.args == error.args
    assert vars(copy) == vars(error)


def test_moved_exceptions_stay_importable_from_their_old_modules() -> None:
    from etlkit.model.commands import CommandError, CommandTimeoutError
    from etlkit.model.sensors import SensorTimeoutError
    from etlkit.runs.notifications import NotificationError
    from etlkit.settings.connections import ConnectionNotFoundError
    from etlkit.storage.store import RunExistsError

    assert CommandError is errors.CommandError
    assert CommandTimeoutError is errors.CommandTimeoutError
    assert ConnectionNotFoundError is errors.ConnectionNotFoundError
    assert NotificationError is errors.NotificationError
    assert SensorTimeoutError is errors.SensorTimeoutError
    assert RunExistsError is errors.RunExistsError


def test_the_tree_drawn_in_the_errors_docstring_names_every_class_of_errors() -> None:
    defined = [
        name
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
    ]
    doc = errors.__doc__ or ""

    assert [name for name in defined if name not in doc] == []


def test_every_public_exception_of_the_connectors_is_a_connector_error() -> None:
    mine = [
        c
        for c in raised_by_etlkit()
        if c.__module__.startswith("connectors") and not c.__name__.startswith("_")
    ]

    assert mine != []
    assert [c.__qualname__ for c in mine if not issubclass(c, errors.ConnectorError)] == []


def test_the_retry_mixins_are_not_etlkit_errors_so_users_put_them_on_their_own() -> None:
    class RateLimited(RuntimeError, errors.TransientError):
        pass

    for mixin in MIXINS:
        assert not issubclass(mixin, errors.EtlkitError)
    assert isinstance(RateLimited("slow down"), errors.TransientError)
    assert "mixins, not `EtlkitError`s, because" in (errors.__doc__ or "")


def _context_glued_on(path: Path) -> list[str]:
    """Lines of `path` that set an attribute on an exception after creating or catching it
    (`exc.node = ...`); the exception machinery's own dunders (`__cause__`) are not context."""
    found = []
    for function in ast.walk(ast.parse(path.read_text())):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        exceptions = set()
        for node in ast.walk(function):
            if isinstance(node, ast.ExceptHandler) and node.name:
                exceptions.add(node.name)
            elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                called = node.value.func
                name = getattr(called, "id", None) or getattr(called, "attr", "")
                if name.endswith(("Error", "Exception")):
                    exceptions |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(function):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AugAssign | ast.AnnAssign)
                else []
            )
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id in exceptions
                    and not target.attr.startswith("__")
                ):
                    found.append(f"{path}:{node.lineno}: {ast.unparse(target)}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "setattr"
                and isinstance(node.args[0], ast.Name)
                and node.args[0].id in exceptions
            ):
                found.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_code_glues_context_onto_an_exception_after_creating_it() -> None:
    root = Path(etlkit.__file__).parent.parent
    files = sorted([*(root / "etlkit").rglob("*.py"), *(root / "connectors").rglob("*.py")])

    assert [hit for path in files for hit in _context_glued_on(path)] == []


def test_the_glue_scanner_sees_assignments_and_setattr(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(
        "def f():\n"
        "    error = NodeError('x')\n"
        "    error.chunk = 3\n"
        "    error.__cause__ = None\n"
        "    try:\n"
        "        pass\n"
        "    except ValueError as exc:\n"
        "        setattr(exc, 'node', 'n')\n"
    )

    assert [hit.split(": ", 1)[1] for hit in _context_glued_on(probe)] == [
        "error.chunk",
        "setattr(exc, 'node', 'n')",
    ]
