"""The run's DuckDB: one database per run, opened once, locked down, its queries interruptible.

SQL nodes, lazy inputs' dataset checks and the repeats taken out of an output all query it
through connections of their own (`connect`). It reads only the run's staged outputs and the
files a node is allowed (a source's own files, read in place); a failing run interrupts the
queries running on it (`interrupt`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from etlkit.errors import RunCancelledError

if TYPE_CHECKING:
    from etlkit.engine.plan import RunOptions
    from etlkit.storage.staging import Staging


class RunDatabase:
    """The DuckDB database of one run (see the module docstring); `close` it when the run ends.

    Every connection may read the run's staging directory (of `pipeline` and `run_id`);
    `cancelled` tells whether the run is being cancelled (an interrupted query then raises
    `RunCancelledError`). `ahead`: the run's nodes share this database in one process, so a
    source about to be referenced has it opened for its files meanwhile (`prepare_soon`).
    """

    def __init__(
        self,
        staging: Staging,
        pipeline: str,
        run_id: str,
        options: RunOptions,
        cancelled: Callable[[], bool],
        *,
        ahead: bool = False,
    ) -> None:
        self.staging = staging
        self.ahead = ahead
        self.openers: list[threading.Thread] = []  # `prepare_soon`'s, joined by `close`
        self.closed = False
        self.pipeline, self.run_id = pipeline, run_id
        self.options = options
        self.cancelled = cancelled
        self.database: Any = None  # opened by the first node needing it
        self.spare: Any = None  # connected ahead of need, locked down by the first `open`
        self.database_lock = threading.RLock()
        self.readable: set[str] = set()  # files outside the run's directory it reads
        self.retired: list[Any] = []  # databases replaced by one reading more files
        self.database_used = False  # a node has a connection to `database`
        self.lock = threading.Lock()
        self.queries: dict[int, Any] = {}  # connections running queries (`interruptible`)

    def connect(self, reads: Sequence[str] = ()) -> Any:
        """A connection of its own to the run's DuckDB database, able to read `reads` (and the
        run's staged outputs); close it after use.

        The database is opened once per run, with the run's resource limits (so SQL nodes
        running at once share one memory limit); opening one is costly, a connection to it
        cheap. Views a node creates are TEMP: they belong to its connection.
        """
        with self.lock:
            openers = list(self.openers)
        for opener in openers:  # opening one for a source's files: use it, not open another
            opener.join()
        with self.database_lock:
            con = self.open(reads).cursor()
            self.database_used = True
        # a cursor starts with the progress bar off, and the locked configuration keeps it so
        return con

    def prepare_soon(self, reads: Sequence[str]) -> None:
        """Open, on a thread of its own, a database able to read `reads` (a source's files,
        about to be referenced for an SQL node), which the SQL node would otherwise wait for:
        the one `warm` connected at run start, locked down now, or (once one is locked without
        them) a new one replacing it. Nothing when the database is not shared in this process
        (`ahead`) or the run has ended."""
        if not self.ahead:
            return
        opener = threading.Thread(target=self.prepare, args=(list(reads),), name="etlkit-duckdb")
        with self.lock:
            if self.closed:
                return
            self.openers.append(opener)
            opener.start()

    def prepare(self, reads: Sequence[str] = ()) -> None:
        """Open the run's database ahead of need, able to read `reads`; a failure is raised
        to the node needing it."""
        with contextlib.suppress(Exception):
            self.open(reads)

    def warm(self) -> None:
        """Connect the run's database ahead of need, at run start: connecting is the costly
        part of opening one. Its lockdown waits for the first `open`, which knows the files
        it must read (a source referenced later names its own), so a source's files do not
        cost a second database. A failure is raised to the node needing it."""
        with self.database_lock:
            if self.database is None and self.spare is None and not self.closed:
                with contextlib.suppress(Exception):
                    self.spare = self.connected()

    def open(self, reads: Sequence[str] = ()) -> Any:
        """The run's DuckDB database, opened on first call, locked down as `etlkit query`'s:
        it reads the run's staged outputs and the files in `reads` (a source's own Parquet
        files, read in place), and no other file; a query can neither write a file (`COPY ...
        TO`), attach, nor load an extension, nor change a setting.

        The files a database may read are fixed when it opens: one asked for later, outside
        the run's directory, opens another database (the first stays open for the nodes using
        it, until the run ends).
        """
        with self.database_lock:
            prefix = self.staging.url(self.staging.run_dir(self.pipeline, self.run_id))
            outside = {f for f in reads if not f.startswith(prefix + "/")}
            if self.database is not None and outside <= self.readable:
                return self.database
            if self.database is not None and self.database_used:
                self.retired.append(self.database)
            elif self.database is not None:  # opened ahead of need, never used: not kept
                self.database.close()
            self.database_used = False
            self.readable |= outside
            self.database = self.locked_database(prefix + "/", sorted(self.readable))
            return self.database

    def locked_database(self, run_dir: str, files: Sequence[str]) -> Any:
        # the database `warm` connected, if any: never handed out before it is locked down
        database, self.spare = self.spare, None
        if database is None:
            database = self.connected()
        try:
            if not self.staging.local:
                database.register_filesystem(self.staging.fs)
            # spilling to the temp directory is DuckDB's own: it needs no allowed directory
            database.execute("SET allowed_directories = ?", [[run_dir]])
            database.execute("SET allowed_paths = ?", [list(files)])
            database.execute("SET enable_external_access = false")
            database.execute("SET lock_configuration = true")
        except BaseException:
            database.close()
            raise
        return database

    def connected(self) -> Any:
        """A new in-memory DuckDB database with the run's resource limits, not locked down."""
        import duckdb

        options = self.options
        config: dict[str, Any] = {
            "memory_limit": options.duckdb_memory_limit,
            "autoinstall_known_extensions": False,  # offline machines: never download
            "autoload_known_extensions": False,
            "allow_community_extensions": False,
            "allow_persistent_secrets": False,
        }
        if options.duckdb_threads:
            config["threads"] = options.duckdb_threads
        if options.duckdb_temp_directory:
            config["temp_directory"] = options.duckdb_temp_directory
        return duckdb.connect(":memory:", config=config)

    @contextlib.contextmanager
    def interruptible(self, con: Any) -> Iterator[None]:
        """While a node runs DuckDB queries on `con`: a failing run interrupts them
        (`interrupt`), and the error an interrupted query raises becomes the run's
        cancellation. `con` None: the node runs no query."""
        if con is None:
            yield
            return
        with self.lock:
            self.queries[id(con)] = con
        try:
            if self.cancelled():  # failed before its queries could be interrupted
                raise RunCancelledError("run cancelled")
            yield
        except Exception as exc:
            import duckdb

            if isinstance(exc, duckdb.Error) and self.cancelled():
                raise RunCancelledError("run cancelled") from None  # an interrupted query
            raise
        finally:
            with self.lock:
                del self.queries[id(con)]

    def interrupt(self) -> None:
        """Stop every running query (the run is being cancelled)."""
        with self.lock:
            queries = list(self.queries.values())
        for con in queries:
            with contextlib.suppress(Exception):  # closed meanwhile: its query has ended
                con.interrupt()

    def close(self) -> None:
        """Close every database the run opened (after its nodes: it closes their connections)."""
        with self.lock:
            self.closed = True
            openers = list(self.openers)
        for opener in openers:
            opener.join()  # a process exiting while DuckDB opens aborts (SIGABRT)
        with self.database_lock:
            databases = [*self.retired, self.database, self.spare]
            self.spare = None
        for database in databases:
            if database is not None:
                database.close()
