"""Named connections: definitions from etlkit.toml and the environment, secrets, resolution.

The environment is always passed explicitly; os.environ is never read or changed.
"""

from __future__ import annotations

import logging
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest

from etlkit.errors import ConfigError
from etlkit.settings import connections
from etlkit.settings.config import load_settings
from etlkit.settings.connections import (
    Connection,
    ConnectionNotFoundError,
    SecretStr,
    load_connections,
    mask,
    resolve,
)

PASSWORD = "p@ss:w/rd+%?"  # every character a URI would mangle
ENCODED = "p%40ss%3Aw%2Frd%2B%25%3F"


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "etlkit.toml"
    path.write_text(text)
    return path


@pytest.fixture
def registry() -> Iterator[None]:
    """Restore the process-wide registry after the test."""
    previous = connections.activate(None)
    yield
    connections.activate(previous)


# ---------------------------------------------------------------- loading


def test_uri_parsing_decodes_a_password_with_at_and_colon(tmp_path: Path) -> None:
    uri = f"postgresql://etl:{ENCODED}@db.internal:5433/hospital?sslmode=require&pool_slots=3"
    conns = load_connections(tmp_path, env={"ETLKIT_CONN_HOSPITAL_DB": uri})
    conn = conns["hospital_db"]
    assert (conn.kind, conn.host, conn.port, conn.login, conn.database) == (
        "postgresql",
        "db.internal",
        5433,
        "etl",
        "hospital",
    )
    assert conn.password is not None
    assert conn.password.get_secret_value() == PASSWORD
    assert conn.extra == {"sslmode": "require", "pool_slots": "3"}
    assert conn.pool_slots == 3
    assert conn.source == "env ETLKIT_CONN_HOSPITAL_DB"
    assert conn.uri == uri
    again = load_connections(tmp_path, env={"ETLKIT_CONN_HOSPITAL_DB": conn.uri})
    assert again == conns


def test_kind_aliases_and_empty_parts(tmp_path: Path) -> None:
    env = {"ETLKIT_CONN_DB": "postgres://db.internal", "ETLKIT_CONN_LAKE": "s3://?region=eu"}
    conns = load_connections(tmp_path, env=env)
    assert conns["db"].kind == "postgresql"
    assert conns["db"].uri == "postgresql://db.internal"
    assert (conns["lake"].host, conns["lake"].login, conns["lake"].password) == (None, None, None)


def test_per_field_env_defines_a_connection(tmp_path: Path) -> None:
    env = {
        "ETLKIT_CONN_LAKE__KIND": "s3",
        "ETLKIT_CONN_LAKE__LOGIN": "AKIAEXAMPLE",
        "ETLKIT_CONN_LAKE__PASSWORD": PASSWORD,  # as is: fields are not URL-encoded
        "ETLKIT_CONN_LAKE__EXTRA__ENDPOINT_URL": "http://127.0.0.1:9000",
        "ETLKIT_CONN_LAKE__EXTRA__POOL_SLOTS": "2",
    }
    conn = load_connections(tmp_path, env=env)["lake"]
    assert conn.password == SecretStr(PASSWORD)
    assert conn.extra == {"endpoint_url": "http://127.0.0.1:9000", "pool_slots": "2"}
    assert conn.pool_slots == 2
    assert (
        conn.masked_uri == "s3://AKIAEXAMPLE:***@?endpoint_url=http://127.0.0.1:9000&pool_slots=2"
    )
    assert "env ETLKIT_CONN_LAKE__PASSWORD" in conn.source


def test_env_beats_toml_field_by_field(tmp_path: Path) -> None:
    config = toml(
        tmp_path,
        """
[connections.hospital_db]
uri = "postgresql://etl@db.internal:5432/hospital"
extra = { pool_slots = 4, sslmode = "require" }
""",
    )
    env = {
        "ETLKIT_CONN_HOSPITAL_DB__HOST": "db.prod",
        "ETLKIT_CONN_HOSPITAL_DB__EXTRA__SSLMODE": "verify-full",
        "ETLKIT_CONN_HOSPITAL_DB__PASSWORD": "s3cret",
    }
    conn = load_connections(tmp_path, env=env)["hospital_db"]
    assert (conn.host, conn.port, conn.login, conn.database) == ("db.prod", 5432, "etl", "hospital")
    assert conn.extra == {"pool_slots": "4", "sslmode": "verify-full"}
    assert conn.password == SecretStr("s3cret")
    assert conn.source.startswith(f"etlkit.toml ({config.resolve()}), env ETLKIT_CONN_HOSPITAL_DB")


def test_an_env_uri_sets_its_fields_and_a_field_variable_beats_it(tmp_path: Path) -> None:
    toml(tmp_path, '[connections.db]\nuri = "postgresql://etl@old-host/hospital?pool_slots=4"\n')
    env = {
        "ETLKIT_CONN_DB": "postgresql://etl:pw@new-host:6543",
        "ETLKIT_CONN_DB__PORT": "7000",
    }
    conn = load_connections(tmp_path, env=env)["db"]
    assert (conn.host, conn.port, conn.database) == ("new-host", 7000, "hospital")
    assert conn.extra == {"pool_slots": "4"}


def test_password_env_reads_the_named_variable(tmp_path: Path) -> None:
    toml(
        tmp_path,
        '[connections.db]\nuri = "postgresql://etl@db/hospital"\npassword_env = "DB_PASSWORD"\n',
    )
    conn = load_connections(tmp_path, env={"DB_PASSWORD": PASSWORD})["db"]
    assert conn.password == SecretStr(PASSWORD)
    assert resolve("db", connections={"db": conn}) is conn


def test_missing_password_env_fails_only_when_the_connection_is_used(tmp_path: Path) -> None:
    toml(tmp_path, '[connections.db]\nkind = "postgresql"\npassword_env = "DB_PASSWORD"\n')
    conns = load_connections(tmp_path, env={})
    assert conns["db"].problem is not None
    with pytest.raises(
        ConfigError, match=r"DB_PASSWORD .*which is not set.*ETLKIT_CONN_DB__PASSWORD"
    ):
        resolve("db", connections=conns)
    assert "unusable" in connections.list_rows(conns)[0][3]
    assert connections.test_connection(conns["db"])[0] is False
    fixed = load_connections(tmp_path, env={"ETLKIT_CONN_DB__PASSWORD": "pw"})
    assert resolve("db", connections=fixed).password == SecretStr("pw")


def test_password_in_toml_is_accepted_with_a_warning_that_hides_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    toml(tmp_path, f'[connections.db]\nkind = "postgresql"\npassword = "{PASSWORD}"\n')
    with caplog.at_level(logging.WARNING, logger="etlkit.settings.connections"):
        conn = load_connections(tmp_path, env={})["db"]
    assert conn.password == SecretStr(PASSWORD)
    assert "secrets belong in the environment" in caplog.text
    assert "ETLKIT_CONN_DB__PASSWORD" in caplog.text
    assert PASSWORD not in caplog.text


def test_names_are_case_insensitive(tmp_path: Path) -> None:
    toml(tmp_path, '[connections.Hospital_DB]\nuri = "postgresql://db/hospital"\n')
    env = {"etlkit_conn_hospital_db__port": "6000"}
    conns = load_connections(tmp_path, env=env)
    assert list(conns) == ["hospital_db"]
    assert resolve("HOSPITAL_DB", connections=conns).port == 6000
    assert resolve(" Hospital_Db ", connections=conns).name == "hospital_db"


def test_toml_shorthand_is_a_uri_and_paths_resolve_against_the_project(tmp_path: Path) -> None:
    toml(tmp_path, '[connections]\nwarehouse = "duckdb:///warehouse.duckdb"\n')
    conn = load_connections(tmp_path, env={})["warehouse"]
    assert conn.database == str(tmp_path.resolve() / "warehouse.duckdb")
    assert conn.uri == f"duckdb:///{tmp_path.resolve() / 'warehouse.duckdb'}"
    assert connections.test_connection(conn) == (
        False,
        f"{tmp_path.resolve() / 'warehouse.duckdb'} does not exist",
    )
    (tmp_path / "warehouse.duckdb").write_bytes(b"")
    assert connections.test_connection(conn)[0] is True


@pytest.mark.parametrize(
    ("env", "match"),
    [
        ({"ETLKIT_CONN_DB__HOTS": "x"}, r"unknown field 'HOTS'. Did you mean __HOST\?"),
        ({"ETLKIT_CONN_DB__HOST": "x"}, r"'db' .* has no kind: set ETLKIT_CONN_DB__KIND="),
        ({"ETLKIT_CONN_DB": "db.internal:5432"}, r"not a URI of the form <kind>://"),
        ({"ETLKIT_CONN_DB__KIND": "pg", "ETLKIT_CONN_DB__PORT": "54x"}, r"port '54x' is not"),
        ({"ETLKIT_CONN_DB": "postgresql://h?pool_slots=0"}, r"pool_slots '0' must be .* >= 1"),
        ({"ETLKIT_CONN_": "postgresql://h"}, r"Connection name '' \(environment variable"),
        ({"ETLKIT_CONN_A__B__HOST": "x"}, r"unknown field 'B__HOST'"),
    ],
)
def test_malformed_definitions_name_the_variable_and_the_fix(
    tmp_path: Path, env: dict[str, str], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        load_connections(tmp_path, env=env)


def test_bad_uri_errors_never_show_the_password(tmp_path: Path) -> None:
    for uri in (f"postgresql://etl:{PASSWORD}@db/x", "postgresql://etl:hunter2@db:99999/x"):
        with pytest.raises(ConfigError) as caught:
            load_connections(tmp_path, env={"ETLKIT_CONN_DB": uri})
        assert "hunter2" not in str(caught.value)
        assert PASSWORD not in str(caught.value)
        assert "URL-encode" in str(caught.value)


def test_unknown_toml_field_suggests_the_right_one(tmp_path: Path) -> None:
    toml(tmp_path, '[connections.db]\nkind = "postgresql"\npasword_env = "X"\n')
    with pytest.raises(
        ConfigError, match=r"unknown field 'pasword_env'. Did you mean 'password_env'"
    ):
        load_connections(tmp_path, env={})


def test_settings_still_skip_connection_variables(tmp_path: Path) -> None:
    env = {"ETLKIT_CONN_DB": "postgresql://db", "ETLKIT_RUN__RETRIES": "2"}
    assert load_settings(tmp_path, env=env).run.retries == 2
    assert list(load_connections(tmp_path, env=env)) == ["db"]


# ---------------------------------------------------------------- secrets


def test_secret_str_never_shows_the_secret() -> None:
    secret = SecretStr("hunter2")
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>10}",
        "%s %r" % (secret, secret),  # noqa: UP031 (the %-style of log calls)
        "{}".format(secret),  # noqa: UP032
        repr([secret]),
        repr({"password": secret}),
    ]
    assert all("hunter2" not in text for text in shown)
    assert str(secret) == "***"
    assert secret.get_secret_value() == "hunter2"
    assert secret == SecretStr("hunter2")
    assert secret != SecretStr("other")
    assert secret != "hunter2"  # a secret equals only a secret
    assert len({secret, SecretStr("hunter2")}) == 1
    assert pickle.loads(pickle.dumps(secret)) == secret


def test_connection_repr_and_masked_uri_hide_the_password_and_secret_extras() -> None:
    conn = Connection(
        "api",
        "https",
        "api.example.com",
        login="etl",
        password=SecretStr(PASSWORD),
        extra={"token": "tok-123", "region": "eu"},
    )
    assert conn.masked_uri == "https://etl:***@api.example.com?token=***&region=eu"
    assert ENCODED in conn.uri
    assert "tok-123" in conn.uri
    for text in (repr(conn), str(conn), conn.masked_uri):
        assert PASSWORD not in text
        assert ENCODED not in text
        assert "tok-123" not in text
    assert conn.secrets() == [PASSWORD, "tok-123"]


def test_pickling_a_connection_keeps_everything() -> None:
    conn = Connection(
        "db", "postgresql", "h", 5432, "etl", SecretStr(PASSWORD), "x", {"pool_slots": "2"}, "env"
    )
    again = pickle.loads(pickle.dumps(conn))
    assert again == conn
    assert again.uri == conn.uri
    assert again.password is not None
    assert again.password.get_secret_value() == PASSWORD
    assert again.pool_slots == 2


def test_storage_options_for_s3_come_from_login_password_and_extra() -> None:
    conn = Connection(
        "lake",
        "s3",
        login="AKIAEXAMPLE",
        password=SecretStr("wJalr/K7+MDENG"),
        extra={
            "endpoint_url": "http://127.0.0.1:9000",
            "region": "eu-west-1",
            "session_token": "tok",
            "addressing_style": "path",
            "pool_slots": "2",
        },
    )
    assert conn.storage_options() == {
        "key": "AKIAEXAMPLE",
        "secret": "wJalr/K7+MDENG",
        "token": "tok",
        "endpoint_url": "http://127.0.0.1:9000",
        "client_kwargs": {"region_name": "eu-west-1"},
        "config_kwargs": {"s3": {"addressing_style": "path"}},
    }
    assert Connection("anon", "s3", extra={"anon": "true"}).storage_options() == {"anon": True}


def test_storage_options_for_http_carry_an_authorization_header() -> None:
    bearer = Connection("api", "https", "h", password=SecretStr("pw"), extra={"token": "tok"})
    assert bearer.storage_options() == {"headers": {"Authorization": "Bearer tok"}}
    assert Connection("api", "https", "h", password=SecretStr("pw")).storage_options() == {
        "headers": {"Authorization": "Bearer pw"}
    }
    basic = Connection("api", "https", "h", login="u", password=SecretStr("p"))
    assert basic.storage_options() == {"headers": {"Authorization": "Basic dTpw"}}
    assert Connection("api", "http", "h").storage_options() == {}
    assert Connection("local", "file").storage_options() == {}
    with pytest.raises(ConfigError, match=r"'db' .* is a postgresql connection; files are"):
        Connection("db", "postgresql", "h").storage_options()


# ---------------------------------------------------------------- resolving


def test_resolve_suggests_a_close_name_and_how_to_define_one() -> None:
    known = {
        "hospital_db": Connection("hospital_db", "postgresql"),
        "lake": Connection("lake", "s3"),
    }
    with pytest.raises(ConnectionNotFoundError) as caught:
        resolve("hospital_dbb", connections=known)
    message = str(caught.value)
    assert "Connection 'hospital_dbb' is not defined. Did you mean 'hospital_db'?" in message
    assert "Known: hospital_db, lake." in message
    assert "ETLKIT_CONN_HOSPITAL_DBB=<kind>://" in message
    assert "[connections.hospital_dbb]" in message
    assert isinstance(caught.value, ConfigError)
    assert (caught.value.name, caught.value.known) == ("hospital_dbb", ["hospital_db", "lake"])
    again = pickle.loads(pickle.dumps(caught.value))
    assert (type(again), str(again), again.known) == (
        ConnectionNotFoundError,
        message,
        caught.value.known,
    )


def test_resolve_uses_the_activated_connections(registry: None) -> None:
    with pytest.raises(ConnectionNotFoundError, match=r"no connections are loaded in this process"):
        resolve("lake")
    assert connections.active_connections() == {}
    lake = Connection("lake", "s3")
    assert connections.activate({"lake": lake}) is None
    assert resolve("LAKE") is lake
    assert connections.active_connections() == {"lake": lake}
    assert connections.activate(None) == {"lake": lake}
    with pytest.raises(
        ConnectionNotFoundError, match=r"activate\(etlkit.settings.connections.load_connections"
    ):
        resolve("lake")


# ---------------------------------------------------------------- masking


def test_mask_replaces_raw_and_url_encoded_secrets() -> None:
    conns = [
        Connection("db", "postgresql", password=SecretStr(PASSWORD)),
        Connection("api", "https", extra={"api_key": "k-987"}),
    ]
    text = f"raw {PASSWORD} url {ENCODED} path {quote(PASSWORD)} key k-987"
    masked = mask(text, conns)
    assert masked == "raw *** url *** path *** key ***"
    assert mask("nothing secret", conns) == "nothing secret"
    assert mask(text, {c.name: c for c in conns}) == masked


def test_log_filter_masks_messages_args_and_tracebacks() -> None:
    conn = Connection("db", "postgresql", "h", login="etl", password=SecretStr(PASSWORD))
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)
            self.format(record)

    handler = Keep()
    handler.addFilter(connections.install_log_masking([conn]))
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("tests.connections.masking")
    log.addHandler(handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        log.info("connecting to %s", conn.uri)
        log.info(f"password is {PASSWORD}")  # an f-string, as users write
        log.info("plain %d", 3)
        try:
            raise ValueError(f"auth failed for {conn.uri}")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
    texts = [handler.format(r) for r in records]
    assert texts[0] == "connecting to postgresql://etl:***@h"
    assert texts[1] == "password is ***"
    assert (records[2].msg, records[2].args) == ("plain %d", (3,))  # untouched
    assert "auth failed for postgresql://etl:***@h" in texts[3]
    assert all(PASSWORD not in t and ENCODED not in t for t in texts)


def test_list_rows_show_masked_uris_and_sources(tmp_path: Path) -> None:
    env = {"ETLKIT_CONN_DB": f"postgresql://etl:{ENCODED}@h/x", "ETLKIT_CONN_API": "https://h"}
    rows = connections.list_rows(load_connections(tmp_path, env=env))
    assert rows == [
        ("api", "https", "https://h", "env ETLKIT_CONN_API"),
        ("db", "postgresql", "postgresql://etl:***@h/x", "env ETLKIT_CONN_DB"),
    ]


# ---------------------------------------------------------------- testing a connection


@pytest.mark.integration
def test_connection_test_of_http_sends_the_authorization_header() -> None:
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            seen.append(self.headers.get("Authorization"))
            self.send_response(200 if self.path == "/api" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        good = Connection("api", "http", "127.0.0.1", port, database="api", extra={"token": "t-1"})
        assert connections.test_connection(good) == (
            True,
            f"HEAD http://127.0.0.1:{port}/api: HTTP 200",
        )
        bad = Connection("api", "http", "127.0.0.1", port, password=SecretStr("t-2"))
        ok, message = connections.test_connection(bad)
        assert (ok, message) == (False, f"HEAD http://127.0.0.1:{port}/: HTTP 404 Not Found")
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer t-1", "Bearer t-2"]


@pytest.mark.integration
def test_connection_test_of_http_sends_an_api_key_in_its_own_header() -> None:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        keyed = Connection(
            "api",
            "http",
            "127.0.0.1",
            port,
            password=SecretStr("k-1"),
            extra={"header": "X-Api-Key"},
        )
        assert connections.test_connection(keyed)[0] is True
        basic = Connection(
            "api", "http", "127.0.0.1", port, login="u", extra={"token": "t", "auth": "bearer"}
        )
        assert connections.test_connection(basic)[0] is True
    finally:
        server.shutdown()
        server.server_close()
    assert seen[0].get("x-api-key") == "k-1"
    assert "authorization" not in seen[0]
    assert seen[1].get("authorization") == "Bearer t"


@pytest.mark.integration
def test_connection_test_falls_back_to_tcp_and_reports_a_refusal() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        ok, message = connections.test_connection(Connection("cache", "redis", "127.0.0.1", port))
        assert (ok, message) == (True, f"TCP connection to 127.0.0.1:{port} opened")
    ok, message = connections.test_connection(Connection("cache", "redis", "127.0.0.1", port))
    assert not ok
    assert f"cannot open a TCP connection to 127.0.0.1:{port}" in message
