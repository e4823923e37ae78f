"""Checks: Pandera's verdict on every chunk and every dataset, without Pandera's cost per chunk.

Owns the chunk validators compiled from models and the dataset checks over staged outputs
(`validation`) and the invalid-row policies fail, drop and quarantine (`guard`). It may import
`etlkit.errors`, `etlkit.settings`, `etlkit.storage` and `etlkit.model`.
"""
