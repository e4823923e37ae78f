"""Named pools: how many nodes using a shared resource may run at once, across runs and processes.

Sizes come from `[pools]` in etlkit.toml and from connections that declare `pool_slots` (the
pool is named after the connection):

    [pools]
    warehouse = 4

    [connections.crm]
    pool_slots = 2        # pool "crm"

A node opts in with `.options(pool="warehouse")`. The slots themselves are leases in the run
store (`RunStore.acquire_slot` / `release_slot`), so every process sharing the store shares them.
"""

from __future__ import annotations

from pathlib import Path

from etlkit.errors import ConfigError
from etlkit.settings.config import read_toml


def load_pools(project_dir: Path, config_file: Path | None = None) -> dict[str, int]:
    """Pool sizes by name, from `[pools]` and `[connections.NAME] pool_slots` of the config.

    Args:
        project_dir: the project; its `etlkit.toml` is read when `config_file` is None.
        config_file: the TOML file to read instead.

    Raises:
        ConfigError: the file is unreadable, or a size is not an integer >= 1 (the message
            names the key and the file).
    """
    path = config_file if config_file is not None else Path(project_dir) / "etlkit.toml"
    if config_file is None and not path.is_file():
        return {}
    data = read_toml(path)
    pools: dict[str, int] = {}
    connections = data.get("connections", {})
    if isinstance(connections, dict):
        for name, table in connections.items():
            if isinstance(table, dict) and "pool_slots" in table:
                pools[name] = _size(f"connections.{name}.pool_slots", table["pool_slots"], path)
    table = data.get("pools", {})
    if not isinstance(table, dict):
        raise ConfigError(f"'pools' in {path} must be a table ([pools]).")
    for name, value in table.items():
        pools[name] = _size(f"pools.{name}", value, path)  # [pools] wins over a connection's
    return pools


def _size(key: str, value: object, path: Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(
            f"Setting {key} = {value!r} in {path} must be an integer >= 1 (the number of "
            "nodes that may use the pool at once)."
        )
    return value
