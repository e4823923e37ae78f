"""Checks: Pandera's verdict on every chunk and every dataset, without Pandera's cost per chunk.

Owns the chunk validators compiled from models (`validator`, over `builtin` checks, `plan` and
`failures`), the checks proven by column statistics (`proofs`), unique keys across chunks
(`keys`), the dataset checks over staged outputs and the statistics they read (`dataset`), and
the invalid-row policies fail, drop and quarantine (`guard`); `validation` documents the
contract and names what other packages use. It may import `etlkit.errors`, `etlkit.settings`,
`etlkit.storage` and `etlkit.model`.
"""
