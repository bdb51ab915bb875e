"""How the driver-side readers reach one storage location: one model, a rendering per library.

`StorageLogin` is resolved once per location (`Bundle.runtime.storage(location)`), from, in order:
- a local folder (no URL scheme, or file:): nothing to log in to;
- $STREAMOPS_STORAGE_OPTIONS, where set (the override, on any target): an account key or SAS
  token, an emulator's endpoint (Azurite), a service principal, or plain fsspec options;
- on a Databricks job cluster (`Bundle.on_cluster`): `cluster_spark`, the cluster's own Spark
  session, whatever `databricks.storage` says (bundle/storage_access.py holds the Spark side of
  that login; pipeline/cluster_fs.py and pipeline/driver_delta.py read through it);
- otherwise nothing is known here (`reachable` is False).

Convention: both renderings always return a dict, never None; `{}` means "the library's own
defaults" (a local folder, or a remote location without a known login). Whether a login is known
is asked of the model (`reachable`), not read from an empty dict. Secrets are resolved when a
rendering is asked for, and no repr shows them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from streamops.bundle.kafka_settings import GeneratedSecret, Secret
from streamops.bundle.secrets import MASK
from streamops.errors import BundleError, Problem, StorageAccessError

if TYPE_CHECKING:
    from streamops.bundle.models import StorageAccess

# adlfs/delta-rs options for remote storage (account name + key/SAS/service principal) as JSON.
STORAGE_OPTIONS_ENV = "STREAMOPS_STORAGE_OPTIONS"

Kind = Literal[
    "local",  # a folder on this machine
    "unknown",  # remote, and no login for it is known here
    "account_key",  # account name + key (with `endpoint`: an emulator such as Azurite)
    "sas",  # account name + SAS token
    "service_principal",  # Entra ID client credentials
    "cluster_identity",  # the machine's own identity (a managed identity; never on a job cluster)
    "cluster_spark",  # the job cluster's active Spark session (its Hadoop login), not Python's
    "options",  # other fsspec options from the environment (e.g. memory://), passed as given
]

# The fsspec protocol of streamops.pipeline.cluster_fs (registered by name: `bundle` imports no
# stage above it, and fsspec imports the class only when a cluster_spark login is used).
SPARK_PROTOCOL = "streamops-spark"
_SPARK_FS = "streamops.pipeline.cluster_fs.SparkHadoopFileSystem"

# Keys of $STREAMOPS_STORAGE_OPTIONS the model understands; any other is passed to both libraries.
_SECRET_KEYS = ("account_key", "sas_token", "client_secret", "connection_string")
_PLAIN_KEYS = ("account_name", "endpoint", "tenant_id", "client_id", "anon")
# Derived from the endpoint's scheme, so an emulator over http needs no flag of its own.
_DERIVED_KEYS = ("allow_http",)


@dataclass(frozen=True)
class StorageLogin:
    """How delta-rs and adlfs/fsspec log in to one location; `.deltalake()` and `.adlfs()`."""

    kind: Kind
    account_name: str | None = None
    account_key: Secret | None = None
    sas_token: Secret | None = None
    # The Blob endpoint of an emulator (Azurite), e.g. http://127.0.0.1:10000/devstoreaccount1.
    endpoint: str | None = None
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: Secret | None = None
    # adlfs's own form of the same login, kept as given ($STREAMOPS_STORAGE_OPTIONS).
    connection_string: Secret | None = None
    # True: anonymous (public containers); False: the machine's identity; None: not said.
    anonymous: bool | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:
        hidden = ("account_key", "sas_token", "client_secret", "connection_string")
        shown = [f"kind={self.kind!r}"] + [
            f"{k}={MASK if k in hidden else v!r}"
            for k, v in vars(self).items()
            if k != "kind" and v not in (None, {})
        ]
        return f"StorageLogin({', '.join(shown)})"

    @property
    def reachable(self) -> bool:
        """False when the location is remote and no login for it is known here."""
        return self.kind != "unknown"

    def deltalake(self) -> dict[str, str]:
        """delta-rs `storage_options` (every value a str: delta-rs refuses others); never log."""
        if self.kind == "cluster_spark":
            raise StorageAccessError(
                "delta-rs cannot use the job cluster's Spark login; read Delta tables on the "
                "cluster with streamops.pipeline.driver_delta.open_delta (delta-spark)"
            )
        opts = {k: str(v) for k, v in self.extra.items()}
        opts |= _present(account_name=self.account_name, endpoint=self.endpoint)
        opts |= _resolved(account_key=self.account_key, sas_token=self.sas_token)
        if self.endpoint and self.endpoint.startswith("http://"):
            opts["allow_http"] = "true"
        if self.client_secret is not None:
            opts |= _present(tenant_id=self.tenant_id, client_id=self.client_id)
            opts["client_secret"] = self.client_secret.resolve()
        if self.anonymous:
            opts["skip_signature"] = "true"
        # Without a credential delta-rs logs in with the machine's managed identity.
        return opts

    def adlfs(self) -> dict[str, Any]:
        """fsspec/adlfs keyword arguments (`AzureBlobFileSystem(**opts)`); never log them."""
        if self.kind == "cluster_spark":
            import fsspec

            fsspec.register_implementation(SPARK_PROTOCOL, _SPARK_FS, clobber=True)
            return {"protocol": SPARK_PROTOCOL}
        opts: dict[str, Any] = dict(self.extra)
        opts |= _present(account_name=self.account_name)
        opts |= _resolved(account_key=self.account_key, sas_token=self.sas_token)
        if self.client_secret is not None:
            opts |= _present(tenant_id=self.tenant_id, client_id=self.client_id)
            opts["client_secret"] = self.client_secret.resolve()
        if self.connection_string is not None:
            opts["connection_string"] = self.connection_string.resolve()
        elif self.endpoint:
            # adlfs takes no endpoint of its own: a connection string carries it.
            opts["connection_string"] = self._connection_string()
        if self.anonymous is not None:
            opts["anon"] = self.anonymous
        return opts

    def _connection_string(self) -> str:
        assert self.endpoint
        parts = {
            "DefaultEndpointsProtocol": self.endpoint.split("://", 1)[0],
            "AccountName": self.account_name,
            "AccountKey": self.account_key.resolve() if self.account_key else None,
            "SharedAccessSignature": self.sas_token.resolve() if self.sas_token else None,
            "BlobEndpoint": self.endpoint,
        }
        return "".join(f"{k}={v};" for k, v in parts.items() if v)


LOCAL = StorageLogin("local")
UNKNOWN = StorageLogin("unknown")
CLUSTER_SPARK = StorageLogin("cluster_spark")


def _present(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


def _resolved(**secrets: Secret | None) -> dict[str, str]:
    return {k: s.resolve() for k, s in secrets.items() if s is not None}


def is_local(location: str) -> bool:
    """A folder on this machine: no URL scheme, or file:."""
    return "://" not in location or location.startswith("file:")


def login_for(
    location: str,
    *,
    environment: StorageLogin | None,
    cluster: StorageAccess | None = None,
) -> StorageLogin:
    """The login for `location`: local, else the environment's, else the cluster's, else none.

    `cluster`: the target's `databricks.storage`, given only when the bundle runs on the job
    cluster (off it, Airflow or a laptop, nothing is guessed); there the readers go through the
    cluster's Spark session.
    """
    if is_local(location):
        return LOCAL
    if environment is not None:
        return environment
    if cluster is not None:
        return cluster_login(cluster, location)
    return UNKNOWN


def environment_storage(location: str) -> StorageLogin:
    """The login for `location` without a bundle (a checkpoint named on the command line):
    local, else $STREAMOPS_STORAGE_OPTIONS's, else none."""
    return login_for(location, environment=environment_login())


def cluster_login(access: StorageAccess, location: str) -> StorageLogin:
    """The job cluster's login to `location` as the driver's Python readers use it: the
    cluster's own Spark session (`cluster_spark`), for either `access.via`.

    Spark already holds the one login that works there (a Unity Catalog external location, or
    the service principal's OAuth settings in spark_conf); user code gets no managed identity,
    so a second, Python-side login (adlfs, delta-rs) is exactly what fails on a cluster.
    """
    return CLUSTER_SPARK


def login_from_fsspec(options: Mapping[str, Any] | None) -> StorageLogin | None:
    """The model of fsspec/adlfs options as `StorageLogin.adlfs()` renders them (None: none),
    for readers handed only those options that also read Delta (bools become "true"/"false")."""
    if not options:
        return None
    if options.get("protocol") == SPARK_PROTOCOL:
        return CLUSTER_SPARK
    return login_from_options(
        {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
    )


def environment_login() -> StorageLogin | None:
    """The login $STREAMOPS_STORAGE_OPTIONS describes, or None when it is not set.

    Read here, like every environment variable streamops uses; credentials never belong in
    bundle.yml. The value is a JSON object of strings in either library's terms (adlfs's
    `connection_string` or delta-rs's `endpoint` for an emulator); both renderings follow.
    """
    raw = os.environ.get(STORAGE_OPTIONS_ENV) or None
    if raw is None:
        return None
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _env_error(
            f"not valid JSON ({exc.msg} at character {exc.pos})",
            'set it to a JSON object, e.g. {"account_name": "...", "account_key": "..."}',
        ) from None
    if not isinstance(opts, dict) or not all(isinstance(v, str) for v in opts.values()):
        raise _env_error(
            "must be a JSON object of strings", 'e.g. {"account_name": "...", "account_key": "..."}'
        )
    return login_from_options(opts)


def login_from_options(opts: Mapping[str, str]) -> StorageLogin:
    """The model of a mapping of adlfs/delta-rs options (see `environment_login`)."""
    known = (*_SECRET_KEYS, *_PLAIN_KEYS, *_DERIVED_KEYS)
    secret = {k: GeneratedSecret(opts[k]) for k in _SECRET_KEYS if opts.get(k)}
    conn = _connection_parts(opts.get("connection_string", ""))
    account = opts.get("account_name") or conn.get("AccountName")
    key = secret.get("account_key") or _secret(conn.get("AccountKey"))
    sas = secret.get("sas_token") or _secret(conn.get("SharedAccessSignature"))
    anon = opts.get("anon")
    if anon is not None and anon.lower() not in ("true", "false"):
        raise _env_error(f"anon is '{anon}'", 'write "anon": "true" or "false"')
    login = StorageLogin(
        _kind(opts, key is not None, sas is not None),
        account_name=account,
        account_key=key,
        sas_token=sas,
        endpoint=opts.get("endpoint") or conn.get("BlobEndpoint"),
        tenant_id=opts.get("tenant_id"),
        client_id=opts.get("client_id"),
        client_secret=secret.get("client_secret"),
        connection_string=secret.get("connection_string"),
        anonymous=None if anon is None else anon.lower() == "true",
        extra={k: v for k, v in opts.items() if k not in known},
    )
    return login


def _kind(opts: Mapping[str, str], key: bool, sas: bool) -> Kind:
    if opts.get("client_secret"):
        return "service_principal"
    if key:
        return "account_key"
    if sas:
        return "sas"
    if opts.get("account_name") and opts.get("anon", "").lower() == "false":
        return "cluster_identity"
    return "options"


def _secret(value: str | None) -> GeneratedSecret | None:
    return GeneratedSecret(value) if value else None


def _connection_parts(text: str) -> dict[str, str]:
    """Name=value pairs of an Azure Storage connection string (values may contain '=')."""
    pairs = (p.partition("=") for p in text.split(";") if "=" in p)
    return {k.strip(): v.strip() for k, _, v in pairs}


def _env_error(what: str, fix: str) -> BundleError:
    return BundleError([Problem(f"${STORAGE_OPTIONS_ENV}", None, "(environment)", what, fix)])
