"""The web application: routes, the guard every request passes, and the actions behind POSTs.

The guard: with a token, every request must carry it (header `X-Etlkit-Token` or
`Authorization: Bearer`, or the cookie that `?token=` sets once); on a loopback address only
loopback host names are served (a page on another site cannot reach the UI by rebinding a
name); every POST carries the page's CSRF token; responses forbid framing and any script,
style or image not served by the UI itself.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from etlkit.errors import (
    ConfigError,
    EtlkitError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    QueryError,
    StagingError,
    StoreError,
)
from etlkit.model.discovery import load_pipeline
from etlkit.model.graph import Graph
from etlkit.model.pipeline import PipelineDefinition
from etlkit.scheduling.control import pause, trigger, unpause
from etlkit.scheduling.processes import SubprocessLauncher
from etlkit.settings.config import Settings
from etlkit.storage.staging import check_path_part
from etlkit.storage.store import RunStore
from etlkit.ui import data, pages, svg

logger = logging.getLogger(__name__)

_HERE: Final = Path(__file__).resolve().parent
TOKEN_COOKIE: Final = "etlkit_token"
LOOPBACK_HOSTS: Final = ("127.0.0.1", "localhost", "::1", "[::1]")
_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_STATUS: Final[tuple[tuple[type[EtlkitError], int], ...]] = (
    (PipelineNotFoundError, 404),
    (StoreError, 404),
    (ConfigError, 400),
    (StagingError, 400),
    (QueryError, 400),
    (PipelineDefinitionError, 409),
)


@dataclass
class UiConfig:
    """What the UI serves: a project's settings, its pipelines folder, and who may see it.

    `token` None serves anyone who reaches the address (loopback only: see `serve`).
    """

    project_dir: Path
    settings: Settings
    pipelines_dir: Path
    config_file: Path | None = None
    token: str | None = None
    loopback: bool = True
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class _State:
    """The app's shared parts: config, templates, loaded graphs and launched processes."""

    def __init__(self, config: UiConfig) -> None:
        self.config = config
        self.templates = Environment(
            loader=FileSystemLoader(_HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
        )
        self.templates.filters["when"] = _when
        self.templates.filters["colour"] = svg.colour
        self.graphs: dict[str, tuple[float, Graph | None]] = {}
        # pages run in threads: one at a time imports pipeline files
        self.loading = threading.RLock()
        self.children: list[subprocess.Popen[bytes]] = []

    def store(self) -> RunStore:
        return RunStore(self.config.settings.paths.store)

    def pipeline(self, name: str) -> type[PipelineDefinition]:
        """The pipeline named `name` in the folder (validated as `etlkit run` does)."""
        check_path_part("pipeline name", name)
        with self.loading:
            return load_pipeline(name, self.config.pipelines_dir)

    def graph(self, name: str) -> Graph | None:
        """The pipeline's graph, reloaded when its file changes; None if it cannot load."""
        path = self.config.pipelines_dir / f"{check_path_part('pipeline name', name)}.py"
        stamp = path.stat().st_mtime if path.is_file() else 0.0
        with self.loading:
            cached = self.graphs.get(name)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                graph: Graph | None = self.pipeline(name).graph()
            except EtlkitError as exc:
                logger.warning("the UI cannot draw pipeline %s: %s", name, exc)
                graph = None
            self.graphs[name] = (stamp, graph)
            return graph

    def spawn(self, command: list[str]) -> None:
        """Start a detached process (a worker, `etlkit retry`, `etlkit backfill`), reaping the
        ones that ended before."""
        self.children = [c for c in self.children if c.poll() is None]
        self.children.append(
            subprocess.Popen(
                command,
                cwd=self.config.project_dir,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def cli(self, *args: str) -> list[str]:
        """An `etlkit` command line for this project (arguments as a list, never a shell)."""
        command = [sys.executable, "-m", "etlkit", "--project", str(self.config.project_dir)]
        if self.config.config_file is not None:
            command += ["--config", str(self.config.config_file)]
        return [*command, *args]

    def render(self, request: Request, template: str, status: int = 200, **values: Any) -> Response:
        page = self.templates.get_template(template)
        html = page.render(request=request, csrf=self.config.csrf, **values)
        return HTMLResponse(html, status_code=status)


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def _now() -> datetime:
    return datetime.now(UTC)


def _state(request: Request) -> _State:
    state: _State = request.app.state.ui
    return state


# -- the guard -----------------------------------------------------------------------------------


class _Guard(BaseHTTPMiddleware):
    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        token = _state(request).config.token
        if token is not None:
            given = request.query_params.get("token")
            if given is not None:
                if not hmac.compare_digest(given.encode(), token.encode()):
                    return _refused("The token in the URL is wrong.")
                rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                response: Response = RedirectResponse(target, status_code=303)
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
                return _secured(response)
            if not _token_ok(request, token):
                return _refused(
                    "This etlkit UI needs its token: open the URL `etlkit ui` printed"
                    " (…/?token=…), or send the header X-Etlkit-Token."
                )
        return _secured(await call_next(request))


def _token_ok(request: Request, token: str) -> bool:
    bearer = request.headers.get("authorization", "")
    given = (
        request.headers.get("x-etlkit-token")
        or (bearer[7:] if bearer.lower().startswith("bearer ") else None)
        or request.cookies.get(TOKEN_COOKIE)
    )
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _refused(message: str) -> Response:
    return _secured(HTMLResponse(f"<h1>401</h1><p>{message}</p>", status_code=401))


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Frame-Options"] = "DENY"
    return response


async def _form(request: Request) -> dict[str, str]:
    """A POST's form fields, after checking its CSRF token (field `csrf` or `X-CSRF-Token`).

    Raises:
        ConfigError: the token is missing or wrong (answered 403 by `_errors`).
    """
    body = (await request.body()).decode("utf-8", errors="replace")
    fields = {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}
    given = fields.get("csrf") or request.headers.get("x-csrf-token") or ""
    if not hmac.compare_digest(given.encode(), _state(request).config.csrf.encode()):
        raise _CsrfError("This form is stale or came from another site: reload the page.")
    return fields


class _CsrfError(ConfigError):
    """A POST without the page's CSRF token."""


async def _errors(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, EtlkitError)
    status = 403 if isinstance(exc, _CsrfError) else 500
    if status == 500:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(exc)}, status_code=status)
    return _state(request).render(request, "error.html", status, error=str(exc))


# -- pages: plain functions, which Starlette runs in its thread pool, so a long query on one
# page holds up no other request ------------------------------------------------------------


def pipelines_page(request: Request) -> Response:
    ui = _state(request)
    with ui.store() as store, ui.loading:  # the status imports the pipeline files
        rows = pages.overview(store, ui.config.pipelines_dir, _now())
        fingerprint = store.fingerprint()
    template = "pipelines_table.html" if request.query_params.get("fragment") else "pipelines.html"
    return ui.render(request, template, rows=rows, fingerprint=fingerprint, now=_now())


def pulse(request: Request) -> Response:
    with _state(request).store() as store:
        return JSONResponse({"fingerprint": store.fingerprint()})


def pipeline_page(request: Request) -> Response:
    ui = _state(request)
    name = check_path_part("pipeline name", request.path_params["name"])
    before = request.query_params.get("before")
    if before is not None:
        check_path_part("run id", before)
    node_page = _page_number(request.query_params.get("nodes", "0"))
    graph = ui.graph(name)
    with ui.store() as store:
        shown = pages.grid(store, name, graph, before=before, node_page=node_page)
    return ui.render(request, "pipeline.html", grid=shown, name=name, loaded=graph is not None)


def _page_number(text: str) -> int:
    if not text.isdigit() or len(text) > 6:
        raise ConfigError(f"Page {text!r} is not a page number (0, 1, 2, ...)")
    return int(text)


def run_page(request: Request) -> Response:
    ui = _state(request)
    run_id = check_path_part("run id", request.path_params["run_id"])
    with ui.store() as store:
        record = store.get_run(run_id)
        try:
            staged = data.staged_names(record)
        except StagingError as exc:
            logger.warning("run %s: cannot list its staged outputs: %s", run_id, exc)
            staged = []
        page = pages.run_page(
            store,
            record.run_id,
            ui.graph(record.pipeline),
            logs_dir=ui.config.settings.paths.logs_dir,
            staged=staged,
            now=_now(),
        )
    if request.query_params.get("fragment") == "gantt":
        return HTMLResponse(str(page.gantt_svg))
    return ui.render(request, "run.html", page=page, run=page.run)


def run_changes(request: Request) -> Response:
    run_id = check_path_part("run id", request.path_params["run_id"])
    since_text = request.query_params.get("since", "")
    try:
        since = datetime.fromisoformat(since_text)
    except ValueError:
        raise ConfigError(f"since={since_text!r} is not an ISO date and time") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with _state(request).store() as store:
        return JSONResponse(pages.changes(store, run_id, since, _now()))


def data_page(request: Request) -> Response:
    ui = _state(request)
    run_id = check_path_part("run id", request.path_params["run_id"])
    name = check_path_part("staged name", request.path_params["name"])
    sql = request.query_params.get("sql") or None
    with ui.store() as store:
        record = store.get_run(run_id)
    page = data.data_page(record, name, ui.config.settings, sql)
    chart = svg.bars(data.compared(page.history))
    return ui.render(request, "data.html", run=record, page=page, sql=sql or "", chart=chart)


def download(request: Request) -> Response:
    ui = _state(request)
    run_id = check_path_part("run id", request.path_params["run_id"])
    name = check_path_part("staged name", request.path_params["name"])
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "parquet"):
        raise ConfigError(f"Download format {fmt!r} is not csv or parquet")
    with ui.store() as store:
        record = store.get_run(run_id)
    body = data.download(
        record, name, ui.config.settings, request.query_params.get("sql") or None, fmt
    )
    media = "text/csv" if fmt == "csv" else "application/vnd.apache.parquet"
    filename = f"{record.pipeline}-{record.run_id}-{name}.{fmt}"
    return Response(
        body,
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


# -- actions (POST, with the CSRF token) -----------------------------------------------------


async def toggle_pause(request: Request) -> Response:
    ui = _state(request)
    await _form(request)
    cls = ui.pipeline(request.path_params["name"])
    with ui.store() as store:
        if request.url.path.endswith("/pause"):
            pause(store, cls.name)
        else:
            unpause(store, cls.name)
    return RedirectResponse(request.url_for("pipelines"), status_code=303)


async def run_now(request: Request) -> Response:
    """Queue a run (as `etlkit trigger`) and start its worker at once, as the scheduler would."""
    ui = _state(request)
    fields = await _form(request)
    cls = ui.pipeline(request.path_params["name"])
    params = _params(fields.get("params", ""))
    settings = cls.layered(ui.config.settings)
    with ui.store() as store:
        record = trigger(
            cls, store=store, settings=settings, date=fields.get("date") or None, params=params
        )
        if store.claim_run(record.run_id):  # else a scheduler took it: it runs there
            launcher = SubprocessLauncher(
                ui.config.project_dir,
                config_file=ui.config.config_file,
                pipelines_dir=ui.config.pipelines_dir,
            )
            ui.spawn(launcher.command(record.run_id))
    return RedirectResponse(f"/runs/{record.run_id}", status_code=303)


def _params(text: str) -> dict[str, str]:
    params = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"Param line {line!r} is not key=value")
        params[key.strip()] = value
    return params


async def retry(request: Request) -> Response:
    """Retry a failed run in a new `etlkit retry` process."""
    ui = _state(request)
    await _form(request)
    run_id = check_path_part("run id", request.path_params["run_id"])
    with ui.store() as store:
        record = store.get_run(run_id)
    if record.state not in ("failed", "cancelled", "interrupted"):
        raise ConfigError(
            f"Run {record.run_id} is {record.state}: only a finished run that did"
            " not succeed can be retried"
        )
    ui.spawn(
        ui.cli(
            "retry",
            record.run_id,
            "--progress",
            "none",
            "--pipelines",
            str(ui.config.pipelines_dir),
        )
    )
    return RedirectResponse(f"/runs/{record.run_id}?watch=1", status_code=303)


async def backfill(request: Request) -> Response:
    """Backfill a date range in a new `etlkit backfill` process."""
    ui = _state(request)
    fields = await _form(request)
    cls = ui.pipeline(request.path_params["name"])
    start, end = _date(fields.get("start", ""), "start"), _date(fields.get("end", ""), "end")
    if end < start:
        raise ConfigError(f"The backfill ends ({end}) before it starts ({start})")
    ui.spawn(
        ui.cli(
            "backfill",
            cls.name,
            "--start",
            start.isoformat(),
            "--end",
            end.isoformat(),
            "--pipelines",
            str(ui.config.pipelines_dir),
        )
    )
    return RedirectResponse(f"/pipelines/{cls.name}", status_code=303)


def _date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"Backfill {what} {text!r} is not a date YYYY-MM-DD") from None


def create_app(config: UiConfig) -> Starlette:
    """The UI as an ASGI application (served by `serve`; tests call it with httpx)."""
    routes = [
        Route("/", pipelines_page, name="pipelines"),
        Route("/api/pulse", pulse),
        Route("/pipelines/{name}", pipeline_page),
        Route("/pipelines/{name}/pause", toggle_pause, methods=["POST"]),
        Route("/pipelines/{name}/unpause", toggle_pause, methods=["POST"]),
        Route("/pipelines/{name}/run", run_now, methods=["POST"]),
        Route("/pipelines/{name}/backfill", backfill, methods=["POST"]),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/retry", retry, methods=["POST"]),
        Route("/api/runs/{run_id}/changes", run_changes),
        Route("/runs/{run_id}/data/{name}", data_page),
        Route("/runs/{run_id}/data/{name}/download.{fmt}", download),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    middleware = [Middleware(_Guard)]
    if config.loopback:
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={EtlkitError: _errors})
    app.state.ui = _State(config)
    return app
