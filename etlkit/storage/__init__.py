"""Storage: bytes, files and records, knowing nothing of nodes or pipelines.

Owns staging (`staging`: a run's outputs as Parquet parts under a manifest, atomic commits, file
references), the file formats a reference reads its files in (`formats`: the protocol and its
registry; `parquet`: the built-in format, which staging writes too), the run store (`store`:
runs, node runs, events, scheduling state, pool slots in SQLite) and the read-only DuckDB views
over staged outputs (`querying`, `etlkit query`). It may import only `etlkit.errors` and
`etlkit.settings`.
"""
