"""The engine: one run of a pipeline graph, from sources to sinks.

Owns the execution of a run (`execution`: which nodes run and reuse what committed, the steps of
each node role, the thread executor with its bounded channels, cancellation, timeouts and pool
slots) and the run log (`runlog`). It may import every package below it: `etlkit.errors`,
`settings`, `storage`, `model` and `checks`; never `runs`, `scheduling` or the CLI.
"""
