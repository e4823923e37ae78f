"""Every exception etlkit raises is in the one tree, importable from etlkit.errors, and pickles."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
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
