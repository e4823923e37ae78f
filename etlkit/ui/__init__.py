"""The web UI (`etlkit ui`): pipelines, runs, staged data and live progress in a browser.

Thin, like the CLI: pages read the run store, the run logs, the staging root (through the same
locked-down DuckDB views as `etlkit query`) and the scheduler's state, and actions call the
functions `etlkit trigger`, `pause`, `retry` and `backfill` use. It may import anything below
it; only the CLI imports it, lazily, because its libraries (Starlette, uvicorn, Jinja2) are
the optional `ui` extra. `app` holds the routes and the guard, `pages` and `data` gather what
pages show, `svg` draws the graph, the Gantt and the charts, `server` serves it.
"""
