"""Settings: what a project configures, before any pipeline is loaded.

Owns the layered configuration (defaults, `etlkit.toml`, the environment, CLI flags: `config`),
named connections with their secrets masked (the `connections` package: model, loading,
resolution, masking, probes) and pool sizes (`pools`). It may import only `etlkit.errors`.
"""
