"""The engine: one run of a pipeline graph, as a plan, the steps of each node role, an executor.

`plan` builds a `Plan` (plain data) from the graph and the `RunOptions` before anything runs:
which nodes run and which committed outputs are reused or skipped, which edges stream chunks,
what is staged (a copy, or a reference to a source's files), pools, timeouts. `steps` holds
one function per node role (read a source, transform, guard and stage a chunk, check an
output, run SQL or a lazy query, write a sink, run a task, poke a sensor, refer to files),
knowing nothing of threads. `executor` is the interface that runs a plan with those steps and
reports `events`; `local` is its thread implementation (`workers`, bounded `channels`, pool
`slots`, cancellation, timeouts) and `database` the run's locked DuckDB. `execution.execute`
is the entry point `runs` calls; `runlog` routes a run's log lines. It may import every
package below it: `etlkit.errors`, `settings`, `storage`, `model` and `checks`; never `runs`,
`scheduling` or the CLI.
"""
