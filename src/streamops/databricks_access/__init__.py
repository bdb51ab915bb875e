"""One way into a target's Databricks workspace: every client is built here, from the bundle.

`DatabricksAccess` (one per bundle: `access_for(bundle)`) holds what `targets.<t>.databricks`
says about reaching the workspace and builds, each once and only when first asked for:
- `hook()`: the Airflow provider's `DatabricksHook` (streamops' subclass: the endpoints the
  provider lacks as public methods, see `hook.py`), for the Jobs, Permissions and SQL APIs;
- `workspace()`: databricks-sdk's `WorkspaceClient`, for the Workspace, Files and Unity Catalog
  APIs.

Login, in this order: the Airflow connection `airflow_conn_id` when Airflow knows it (inside
Airflow, or a connection defined for this process), else bundle.yml's `host` + `token` (a PAT),
resolved when first needed and held in memory only: the hook gets an in-memory connection,
nothing is written to the environment. Secrets never appear in a repr.

Retries: one `RetryPolicy` (attempts, backoff, Retry-After capped, one `Clock`) for both clients,
run by `streamops.clock.retried`. The provider's tenacity loop is held to one attempt per request
and the hook retries each call by the policy. databricks-sdk has its own loop, which cannot be
switched off: it is given a clock on which its first wait uses up its budget without waiting, so
it makes one attempt and hands its error back, and callers wrap sdk calls in `retrying` (wrap,
not configure: an upload must look whether a lost attempt landed before sending again).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

from streamops.bundle.models import NO_DATABRICKS
from streamops.clock import Clock
from streamops.databricks_access.login import Login, from_connection
from streamops.databricks_access.policy import RetryPolicy
from streamops.errors import MissingDependencyError, WorkspaceAccessError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow.sdk import Connection
    from databricks.sdk import WorkspaceClient

    from streamops.bundle import Bundle
    from streamops.bundle.secrets import SecretRef
    from streamops.databricks_access.hook import StreamopsHook

__all__ = ["DEFAULT_CONN_ID", "DatabricksAccess", "Login", "RetryPolicy", "access_for"]

T = TypeVar("T")
# The connection id of a target whose bundle.yml names none (the model's default, spelled there).
DEFAULT_CONN_ID = NO_DATABRICKS.airflow_conn_id


@dataclass
class DatabricksAccess:
    """How to reach one target's workspace; builds each client once, on first use."""

    conn_id: str = DEFAULT_CONN_ID
    host: str | None = None  # bundle.yml's targets.<t>.databricks.host
    token: SecretRef | None = None  # ...and token: a reference, resolved on first use
    # Where host and token are written, for messages: the YAML path and the file.
    origin: str = "targets.<target>.databricks"
    bundle_file: str = "bundle.yml"
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: int = 180  # per request

    @classmethod
    def of(
        cls, bundle: Bundle, *, policy: RetryPolicy | None = None, timeout_s: int = 180
    ) -> DatabricksAccess:
        """The access `targets.<target>.databricks` describes (defaults where it has none)."""
        db = bundle.target.databricks_or_default
        return cls(
            conn_id=db.airflow_conn_id,
            host=db.host,
            token=db.token,
            origin=f"targets.{bundle.target_name}.databricks",
            bundle_file=bundle.path.name,
            policy=policy or RetryPolicy(),
            timeout_s=timeout_s,
        )

    @property
    def clock(self) -> Clock:
        return self.policy.clock

    @property
    def where(self) -> str:
        """Where the login comes from, for messages: the connection, else bundle.yml."""
        return (
            f"the Airflow connection '{self.conn_id}' (or {self.origin}.host / token in "
            f"{self.bundle_file})"
        )

    @property
    def url(self) -> str:
        """scheme://host[:port] of the workspace (resolves the login: may raise)."""
        return self.login.url

    @cached_property
    def airflow_connection(self) -> Connection | None:
        """The Airflow connection `conn_id`, or None when Airflow (or the connection) is absent."""
        try:
            from airflow.sdk import BaseHook
            from airflow.sdk.exceptions import AirflowNotFoundException
        except ImportError:
            return None
        try:
            return BaseHook.get_connection(self.conn_id)
        except AirflowNotFoundException:
            return None

    @cached_property
    def login(self) -> Login:
        """The one login both clients use (see the module docstring for the order)."""
        conn = self.airflow_connection
        if conn is not None:
            return from_connection(conn, f"the Airflow connection '{self.conn_id}'")
        if self.host and self.token is not None:
            return _bundle_login(self.host, self.token, f"{self.origin} in {self.bundle_file}")
        raise WorkspaceAccessError(
            f"no way into the Databricks workspace: the Airflow connection '{self.conn_id}' is "
            f"not defined, and {self.bundle_file} sets no {self.origin}.host and token. Fix: "
            f"define the connection (a secrets backend, or AIRFLOW_CONN_{self.conn_id.upper()}),"
            " or set `host:` and `token: '{{secrets/<scope>/<key>}}'` there"
        )

    def hook(self) -> StreamopsHook:
        """The provider hook on this access's login and policy (built once)."""
        return self._hook

    @cached_property
    def _hook(self) -> StreamopsHook:
        try:
            from streamops.databricks_access.hook import StreamopsHook
        except ImportError as exc:  # pragma: no cover - depends on install
            raise MissingDependencyError("apache-airflow-providers-databricks", "airflow") from exc
        return StreamopsHook(
            conn_id=self.conn_id,
            connection=self._hook_connection,
            policy=self.policy,
            timeout_s=self.timeout_s,
        )

    def _hook_connection(self) -> Connection:
        """The Airflow connection as it is (every login kind the provider knows), else an
        in-memory one from bundle.yml's login, its secret masked in Airflow's logs."""
        if self.airflow_connection is not None:
            return self.airflow_connection
        from airflow.sdk.log import mask_secret

        mask_secret(self.login.secret)
        return self.login.connection(self.conn_id)

    def workspace(self) -> WorkspaceClient:
        """databricks-sdk's client on the same login (built once); wrap calls in `retrying`."""
        return self._workspace

    @cached_property
    def _workspace(self) -> WorkspaceClient:
        try:
            from databricks.sdk import WorkspaceClient

            from streamops.databricks_access.workspace import sdk_config
        except ImportError as exc:  # pragma: no cover - depends on install
            raise MissingDependencyError("databricks-sdk", "databricks") from exc
        return WorkspaceClient(
            config=sdk_config(self.login, timeout_s=self.timeout_s, clock=self.clock)
        )

    def retrying(self, call: Callable[[], T]) -> T:
        """Run a databricks-sdk call (one attempt each) under the policy: retried when transient,
        after the far side's Retry-After or the backoff; the sdk's own error when it gives up."""
        return self.policy.run(lambda: _sdk_error_itself(call))


def _bundle_login(host: str, token: SecretRef, origin: str) -> Login:
    url = host.rstrip("/") if "://" in host else f"https://{host.rstrip('/')}"
    return Login(url, "pat", token.resolve(), source=origin)


def _sdk_error_itself(call: Callable[[], T]) -> T:
    # The sdk's loop ends (after its one attempt) with TimeoutError("Timed out after ...") raised
    # from the real error: pass on the real one, so messages and the policy see what happened.
    try:
        return call()
    except TimeoutError as exc:
        if isinstance(exc.__cause__, Exception):
            raise exc.__cause__ from None
        raise


_ACCESS: dict[int, DatabricksAccess] = {}


def access_for(bundle: Bundle) -> DatabricksAccess:
    """The access of `bundle`'s target, one per bundle object (so one hook, one sdk client)."""
    key = id(bundle)
    found = _ACCESS.get(key)
    if found is None:
        found = _ACCESS[key] = DatabricksAccess.of(bundle)
        weakref.finalize(bundle, _ACCESS.pop, key, None)
    return found
