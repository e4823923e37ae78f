"""The model: what a pipeline is, checked before any data moves.

Owns the node roles (`nodes`: Source, Transform, Sink, Sql, Lazy, Task, Sensor; their base and
options in `node`), the run's `Context` and its templates (`context`), SQL templates bound safely
(`sql_binding`), what a file source says about its files (`files`: SourceFiles, Origin), the
lookup of connectors by name (`connector_lookup`), the bridge between Pandera models and
Arrow/polars types (`schema`), the graph and its checks (`graph`), the pipeline definition
(`pipeline`) and the discovery of pipelines in a folder (`discovery`), and the built-in nodes
(`commands`: Command, with its argument checks in `command_lines`; `sensors`: FileSensor,
RunSensor). It may import `etlkit.errors`, `etlkit.settings` and `etlkit.storage` (RunSensor
reads the run store).
"""
