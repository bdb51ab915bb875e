"""The Secrets API 2.0 of the local Databricks server (tests/fake_databricks.py), and the rule a
cluster applies when its spec references a secret.

Documented behaviour it keeps (docs.databricks.com/api/workspace/secrets):
- `POST /api/2.0/secrets/scopes/create {"scope", "initial_manage_principal"?}`: the creator gets
  MANAGE (or the `users` group, when `initial_manage_principal` is "users");
  `RESOURCE_ALREADY_EXISTS` for an existing scope. `scopes/delete`, `scopes/list`.
- `POST /api/2.0/secrets/put {"scope", "key", "string_value"}` needs WRITE on the scope;
  `secrets/delete`, `secrets/list` (keys only, never values), `secrets/get` (base64, needs READ).
- `POST /api/2.0/secrets/acls/put {"scope", "principal", "permission"}` (READ / WRITE / MANAGE)
  needs MANAGE; `acls/get`, `acls/list` (`{"items": [...]}`), `acls/delete`.
- Errors: `RESOURCE_DOES_NOT_EXIST` (404) for a missing scope or key, `PERMISSION_DENIED` (403),
  `INVALID_PARAMETER_VALUE` (400) for a bad permission.
A principal has the strongest permission granted to it or to the `users` group (every principal
of the workspace). Every API call is made by the token's user, `CREATOR`.

A cluster resolves `{{secrets/<scope>/<key>}}` in its `spark_env_vars` and `spark_conf` as the
run's principal; without READ on the scope the cluster does not start, and the run fails naming
the scope (`start_refusal`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from tests.fake_jobs_shapes import CREATOR

SECRETS = "/api/2.0/secrets/"
LEVELS = ("READ", "WRITE", "MANAGE")  # weakest first
ALL_USERS = "users"
UPDATED = 1761955200000  # last_updated_timestamp of every secret (ms)
REFERENCE = re.compile(r"\{\{secrets/([^/{}]+)/([^/{}]+)\}\}")


@dataclass
class Scope:
    secrets: dict[str, str] = field(default_factory=dict)
    acls: dict[str, str] = field(default_factory=dict)  # principal -> READ / WRITE / MANAGE


class SecretRefused(Exception):
    """A secret the principal may not read, or that does not exist; `status`/`code` as the API."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class SecretsApi:
    """The workspace's secret scopes; `handle` answers the REST calls, `resolve` is the cluster."""

    def __init__(self) -> None:
        self.scopes: dict[str, Scope] = {}

    # --- what a cluster does ------------------------------------------------------------------
    def can(self, principal: str, scope: str, level: str) -> bool:
        acls = self.scopes[scope].acls
        held = [LEVELS.index(acls[p]) for p in (principal, ALL_USERS) if p in acls]
        return bool(held) and max(held) >= LEVELS.index(level)

    def resolve(self, principal: str, scope: str, key: str) -> str:
        """The value, read as `principal`; SecretRefused when it may not or the key is missing."""
        if scope not in self.scopes:
            raise SecretRefused(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {scope} does not exist!")
        if not self.can(principal, scope, "READ"):
            raise SecretRefused(
                403,
                "PERMISSION_DENIED",
                f"Principal '{principal}' does not have READ permission on secret scope "
                f"'{scope}'. Fix: POST /api/2.0/secrets/acls/put with scope '{scope}', "
                f"principal '{principal}', permission READ",
            )
        value = self.scopes[scope].secrets.get(key)
        if value is None:
            raise SecretRefused(
                404,
                "RESOURCE_DOES_NOT_EXIST",
                f"Secret does not exist with scope: {scope} and key: {key}",
            )
        return value

    def start_refusal(self, principal: str, cluster: dict[str, Any]) -> str | None:
        """Why a cluster with this spec does not start for `principal`, or None: every secret
        its `spark_env_vars` and `spark_conf` reference must resolve."""
        for place, scope, key in references(cluster):
            try:
                self.resolve(principal, scope, key)
            except SecretRefused as exc:
                return (
                    f"Cluster failed to start: cannot resolve {{{{secrets/{scope}/{key}}}}} in "
                    f"new_cluster.{place}: {exc}"
                )
        return None

    # --- the REST API -------------------------------------------------------------------------
    def put(self, scope: str, key: str, value: str, readers: tuple[str, ...] = ()) -> None:
        """A secret (its scope created, the creator managing it) readable by `readers`."""
        s = self.scopes.setdefault(scope, Scope(acls={CREATOR: "MANAGE"}))
        s.secrets[key] = value
        for who in readers:
            if who not in s.acls:
                s.acls[who] = "READ"

    def handle(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        ep = f"{method} {path.removeprefix(SECRETS)}"
        try:
            if ep == "POST scopes/create":
                return self._create_scope(body)
            if ep == "GET scopes/list":
                names = sorted(self.scopes)
                return 200, {"scopes": [{"name": n, "backend_type": "DATABRICKS"} for n in names]}
            scope = self._scope(str(body.get("scope", "")))
            return self._in_scope(ep, scope, body)
        except SecretRefused as exc:
            return exc.status, {"error_code": exc.code, "message": str(exc)}

    def _create_scope(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name = str(body["scope"])
        if name in self.scopes:
            raise SecretRefused(400, "RESOURCE_ALREADY_EXISTS", f"Scope {name} already exists!")
        manager = ALL_USERS if body.get("initial_manage_principal") == ALL_USERS else CREATOR
        self.scopes[name] = Scope(acls={manager: "MANAGE"})
        return 200, {}

    def _scope(self, name: str) -> Scope:
        if name not in self.scopes:
            raise SecretRefused(404, "RESOURCE_DOES_NOT_EXIST", f"Scope {name} does not exist!")
        return self.scopes[name]

    def _need(self, scope_name: str, level: str) -> None:
        if not self.can(CREATOR, scope_name, level):
            raise SecretRefused(
                403,
                "PERMISSION_DENIED",
                f"User {CREATOR} does not have {level} permission on scope {scope_name}",
            )

    def _in_scope(self, ep: str, scope: Scope, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        name, key = str(body["scope"]), str(body.get("key", ""))
        need = {"GET": "READ", "POST": "WRITE"}.get(ep.split()[0])
        if need is None:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": ep}
        self._need(name, "MANAGE" if "acls/" in ep or ep == "POST scopes/delete" else need)
        if ep == "POST scopes/delete":
            del self.scopes[name]
        elif ep == "POST put":
            scope.secrets[key] = str(body.get("string_value", body.get("bytes_value", "")))
        elif ep == "POST delete":
            if scope.secrets.pop(key, None) is None:
                raise SecretRefused(404, "RESOURCE_DOES_NOT_EXIST", f"No secret {key} in {name}")
        elif ep == "GET list":
            keys = sorted(scope.secrets)
            return 200, {"secrets": [{"key": k, "last_updated_timestamp": UPDATED} for k in keys]}
        elif ep == "GET get":
            value = self.resolve(CREATOR, name, key).encode()
            return 200, {"key": key, "value": base64.b64encode(value).decode()}
        else:
            return self._acls(ep, name, scope, body)
        return 200, {}

    def _acls(
        self, ep: str, name: str, scope: Scope, body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        principal = str(body.get("principal", ""))
        if ep == "POST acls/put":
            if body.get("permission") not in LEVELS or not principal:
                raise SecretRefused(
                    400,
                    "INVALID_PARAMETER_VALUE",
                    f"permission must be one of {', '.join(LEVELS)}, for a named principal",
                )
            scope.acls[principal] = str(body["permission"])
        elif ep == "POST acls/delete":
            scope.acls.pop(principal, None)
        elif ep == "GET acls/list":
            return 200, {
                "items": [{"principal": p, "permission": v} for p, v in scope.acls.items()]
            }
        elif ep == "GET acls/get":
            if principal not in scope.acls:
                raise SecretRefused(404, "RESOURCE_DOES_NOT_EXIST", f"No ACL for {principal}")
            return 200, {"principal": principal, "permission": scope.acls[principal]}
        else:
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{ep} in {name}"}
        return 200, {}


def references(cluster: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(place, scope, key) of each `{{secrets/scope/key}}` in a cluster spec's env and conf."""
    for block in ("spark_env_vars", "spark_conf"):
        for name, value in (cluster.get(block) or {}).items():
            for scope, key in REFERENCE.findall(str(value)):
                yield f"{block}.{name}", scope, key


def masked(body: dict[str, Any]) -> dict[str, Any]:
    """A request body as recorded: a secret's value never kept in the call log."""
    if "string_value" in body or "bytes_value" in body:
        return {**body, **{k: "[REDACTED]" for k in ("string_value", "bytes_value") if k in body}}
    return body
