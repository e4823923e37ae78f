"""Storage: bytes, files and records, knowing nothing of nodes or pipelines.

Owns staging (`staging`: a run's outputs as Parquet parts under a manifest, their layout under
the root, listing, reading back, verifying and removing; built from `root`, the filesystem and
its file operations, `paths`, which names are safe in a path, `manifest`, what a committed output
holds and its JSON, file references included, `writer`, writing one node's output: parts,
sizing, the atomic commit, and `partitions`, writing it as partitions apart, on several
machines, committed as one), the file formats a reference reads its files in (`formats`: the
protocol and its registry; `parquet`: the built-in format, which staging writes too), the run
store (`store`: runs, node runs, events, scheduling state, pool slots in SQLite) and SQL over
staged outputs (`views`: the read-only DuckDB connection and its views; `querying`: running SQL,
`ek.query`, `etlkit query` and its shell; `results`: text tables and result files). It may
import only `etlkit.errors` and `etlkit.settings`.
"""
