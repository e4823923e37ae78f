"""The model: what a pipeline is, checked before any data moves.

Owns the node roles (`nodes`: Source, Transform, Sink, Sql, Lazy, Task, Sensor, their Context),
the bridge between Pandera models and Arrow/polars types (`schema`), the graph and its checks
(`graph`), the pipeline definition and the discovery of pipelines in a folder (`pipeline`) and the
built-in nodes (`commands`: Command; `sensors`: FileSensor, RunSensor). It may import
`etlkit.errors`, `etlkit.settings` and `etlkit.storage` (RunSensor reads the run store).
"""
