"""Named connections and their secrets.

Pipelines name the systems they talk to (`CsvSource(..., conn="lake")`,
`PostgresSource(conn="hospital_db", ...)`) and never hold credentials. A connection is defined
in `etlkit.toml`, in the environment, or both:

```toml
[connections.hospital_db]
uri = "postgresql://etl@db.internal:5432/hospital?pool_slots=4"
password_env = "HOSPITAL_DB_PASSWORD"    # `password = "..."` works too, with a warning

[connections.lake]                       # S3 or any S3-compatible store (MinIO, moto, ...)
kind = "s3"
login = "AKIAEXAMPLE"                    # the access key id; the secret key is the password
extra = { endpoint_url = "http://127.0.0.1:9000", region = "eu-west-1" }
```

```sh
ETLKIT_CONN_HOSPITAL_DB=postgresql://etl:p%40ss@db.internal:5432/hospital  # a whole URI
ETLKIT_CONN_LAKE__PASSWORD=wJalrXUtnFEMI/K7MDENG                            # one field
ETLKIT_CONN_LAKE__EXTRA__ENDPOINT_URL=http://127.0.0.1:9000                 # one extra key
```

The environment beats the file field by field (and `extra` key by key); within the environment
a field variable beats the URI variable. Fields are `kind` (the URI scheme: postgresql, s3,
http, https, duckdb, file, ...), `host`, `port`, `login`, `password`, `database` (the URI's
path) and `extra` (its query string). Names are case-insensitive, normalised to lower case, and
made of letters, digits and single underscores. A password inside a URI is URL-encoded (`@` as
`%40`, `:` as `%3A`, `/` as `%2F`); field variables take it as is.

Passwords are `SecretStr`: `repr`, `str` and f-strings show `***`. `mask` and the logging
filter of `install_log_masking` replace every known secret (raw and URL-encoded) with `***`.

`load_connections` runs once, at the edge (the CLI, the scheduler, each run's process), which
hands the result to `activate`; nodes then call `resolve(name)`. Importing this package reads
nothing and registers nothing.

The package, by concept: `secrets` (SecretStr), `model` (Connection), `loading`
(load_connections), `resolution` (activate, resolve), `masking` (mask, the logging filter) and
`probes` (test_connection). It may import only `etlkit.errors` and `etlkit.settings.config`.
"""

from __future__ import annotations

from etlkit.errors import ConnectionNotFoundError
from etlkit.settings.connections.loading import load_connections
from etlkit.settings.connections.masking import (
    Connections,
    SecretMaskingFilter,
    install_log_masking,
    list_rows,
    mask,
)
from etlkit.settings.connections.model import Connection
from etlkit.settings.connections.probes import test_connection
from etlkit.settings.connections.resolution import activate, active_connections, resolve
from etlkit.settings.connections.secrets import MASK, SecretStr

__all__ = [
    "MASK",
    "Connection",
    "ConnectionNotFoundError",
    "Connections",
    "SecretMaskingFilter",
    "SecretStr",
    "activate",
    "active_connections",
    "install_log_masking",
    "list_rows",
    "load_connections",
    "mask",
    "resolve",
    "test_connection",
]
