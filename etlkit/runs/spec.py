"""What a run needs of its pipeline (`RunSpec`): `runs` knows pipelines by this protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from etlkit.model.graph import Graph


class RunSpec(Protocol):
    """What a run needs of its pipeline: a `Pipeline` subclass is one. `runs` knows pipelines by
    this, so it does not import `pipeline` (which calls into `runs` for `Pipeline.run`)."""

    @property
    def name(self) -> str: ...

    @property
    def timezone(self) -> str: ...

    @property
    def on_failure(self) -> Sequence[str | Callable[[Any], None]]: ...

    @property
    def on_retry(self) -> Sequence[str | Callable[[Any], None]]: ...

    @property
    def on_success(self) -> Sequence[str | Callable[[Any], None]]: ...

    def graph(self) -> Graph: ...
