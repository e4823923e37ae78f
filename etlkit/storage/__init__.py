"""Storage: bytes, files and records, knowing nothing of nodes or pipelines.

Owns staging (`staging`: a run's outputs as Parquet parts under a manifest, atomic commits, file
references), the run store (`store`: runs, node runs, events, scheduling state, pool slots in
SQLite) and the read-only DuckDB views over staged outputs (`querying`, `etlkit query`). It may
import only `etlkit.errors` and `etlkit.settings`.
"""
