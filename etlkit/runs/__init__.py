"""Runs: a run as users and the scheduler see it, recorded.

Owns `ek.Pipeline` with its `run` and `retry` (`pipeline`), recording runs and node runs in the
store with retries, resumes and exactly-once sink bookkeeping (`recording`), notifications
(`notifications`) and the worker process the scheduler starts (`worker`). It may import the
engine and everything below it; never `scheduling`, the CLI or the UI.
"""
