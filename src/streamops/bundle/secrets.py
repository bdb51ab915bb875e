"""Secret references: written in bundle.yml as references, resolved only at run time, masked always.

Accepted forms:
  {{secrets/<scope>/<key>}}   a Databricks secret (resolved by Databricks, or locally from the
                              environment variable STREAMOPS_SECRET_<SCOPE>_<KEY>)
  {{env/<VAR_NAME>}}          an environment variable of the process that runs the job
  {{conn/<conn_id>[/<field>]}} an Airflow connection (field: password (default), login, host, extra)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import PlainSerializer, PlainValidator

from streamops.errors import StreamopsError

_REF = re.compile(
    r"^\{\{\s*(?:(secrets)/([\w.-]+)/([\w.-]+)|(env)/([A-Za-z_][A-Za-z0-9_]*)"
    r"|(conn)/([\w.-]+)(?:/(password|login|host|extra))?)\s*\}\}$"
)
MASK = "***"
# Shapes of real secrets: Databricks PATs, storage account keys, SAS signatures, Slack tokens,
# PEM private keys. Used to refuse literals anywhere in bundle.yml and to keep them out of errors.
_SECRET_LOOKING = re.compile(
    r"(dapi[0-9a-f]{32}|AccountKey=[A-Za-z0-9+/=]{20,}|[?&]sig=[A-Za-z0-9%+/=]{20,}"
    r"|xox[bp]-[0-9A-Za-z-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY-----)"
)


class SecretNotResolved(StreamopsError):
    """A secret reference points at nothing at run time."""


@dataclass(frozen=True)
class SecretRef:
    """A reference to a secret; never holds the secret itself."""

    kind: str  # "secrets" | "env" | "conn"
    a: str
    b: str = ""

    @property
    def text(self) -> str:
        if self.kind == "secrets":
            return f"{{{{secrets/{self.a}/{self.b}}}}}"
        if self.kind == "env":
            return f"{{{{env/{self.a}}}}}"
        return f"{{{{conn/{self.a}/{self.b or 'password'}}}}}"

    def __repr__(self) -> str:
        return f"SecretRef({self.text})"

    __str__ = __repr__

    @property
    def env_var(self) -> str:
        """Where a {{secrets/scope/key}} is read from at run time: locally the user exports it; on
        Databricks the job spec maps it to the secret (`spark_env_vars`, resolved at cluster
        start)."""
        return f"STREAMOPS_SECRET_{self.a}_{self.b}".upper().replace("-", "_").replace(".", "_")

    def resolve(self) -> str:
        """Return the secret's value at run time. Never log the result."""
        if self.kind == "env":
            val = os.environ.get(self.a)
            if val is None:
                raise SecretNotResolved(
                    f"secret {self.text}: environment variable {self.a} is not set. "
                    f"Fix: export {self.a}=... in the job's environment."
                )
            return val
        if self.kind == "secrets":
            var = self.env_var
            val = os.environ.get(var)
            if val is None:
                raise SecretNotResolved(
                    f"secret {self.text}: outside Databricks it is read from the environment "
                    f"variable {var}, which is not set. Fix: export {var}=..., or run on Databricks "
                    f"where the scope '{self.a}' holds the key '{self.b}'."
                )
            return val
        try:
            from airflow.sdk import BaseHook  # imported only when a connection is really needed
        except ImportError as exc:  # pragma: no cover - depends on install
            raise SecretNotResolved(
                f"secret {self.text} names an Airflow connection, but Airflow is not installed "
                "here. Fix: resolve it inside an Airflow task, or use {{env/VAR}}."
            ) from exc
        conn = BaseHook.get_connection(self.a)
        field = self.b or "password"
        val = getattr(conn, field, None)
        if not val:
            raise SecretNotResolved(f"secret {self.text}: connection '{self.a}' has no {field}.")
        return str(val)


def looks_like_secret(value: str) -> bool:
    """True when `value` contains something shaped like a real secret (token, key, signature)."""
    return bool(_SECRET_LOOKING.search(value))


def looks_like_ref(value: str) -> bool:
    return value.strip().startswith("{{")


def parse_secret(value: Any) -> SecretRef:
    """Parse a reference; a literal value is refused so no secret is ever committed."""
    if isinstance(value, SecretRef):
        return value
    if not isinstance(value, str):
        raise ValueError("a secret must be a reference such as '{{secrets/scope/key}}'")
    m = _REF.match(value.strip())
    if not m:
        # Never echo the value: a malformed reference often has the secret pasted into it.
        if looks_like_ref(value):
            raise ValueError(
                "the value is not a secret reference I understand (not shown: it may hold a "
                "secret); write exactly one of {{secrets/<scope>/<key>}}, {{env/VAR_NAME}} or "
                "{{conn/<conn_id>[/password|login|host|extra]}}, with names of letters, digits, "
                "'.', '_' or '-', and nothing around the braces"
            )
        raise ValueError(
            "a secret is written here as a literal value (it would be committed and logged); "
            "store it in a secret scope, an environment variable or an Airflow connection and "
            "write a reference: {{secrets/scope/key}}, {{env/VAR_NAME}} or {{conn/conn_id}}"
        )
    if m.group(1):
        return SecretRef("secrets", m.group(2), m.group(3))
    if m.group(4):
        return SecretRef("env", m.group(5))
    return SecretRef("conn", m.group(7), m.group(8) or "")


SecretField = Annotated[
    SecretRef, PlainValidator(parse_secret), PlainSerializer(lambda s: s.text, return_type=str)
]
