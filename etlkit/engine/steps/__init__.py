"""The steps of a run: one module per node role, each a function knowing nothing of threads.

A step takes its inputs (iterators of record batches) and a `StepContext` (the node's
`Context` and `NodeStats`, staging, the run's DuckDB, a cancellation check) and returns or
yields its output: `sources` reads a source (incremental cursors, row hashes), `transforms`
runs a transform per chunk, `stage` guards, stages and sends on every chunk and commits the
output, `dataset` checks a whole output, `queries` runs SQL and lazy queries, `sinks` writes a
sink exactly once, `tasks` runs tasks and pokes sensors, `references` stages a source as a
reference to its files, `inputs` reads what a node receives and `roles` picks a role's steps.
Any executor calls them: the local one on its threads, a partitioned one per partition.
"""
