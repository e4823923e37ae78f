"""Runs: a run as users and the scheduler see it, recorded.

Owns `ek.Pipeline` with its `run` and `retry` (`pipeline`); running a pipeline with the run and
its node runs recorded in the store (`recording`, with `recorder` writing node runs as they
happen, `cursors` for incremental loads, `retries` for in-run node retries and `resuming` for
reruns under the same id and sink leftovers); what a run needs of its pipeline (`spec`); telling
callbacks about a run (`notifying`) through the configured channels (`notifications`); and the
worker process the scheduler starts (`worker`). It may import the engine and everything below
it; never `scheduling`, the CLI or the UI.
"""
