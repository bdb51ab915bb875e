"""The Workspace API 2.0 and the Files API of the local Databricks server (tests/fake_databricks.py).

Documented behaviour it keeps (docs.databricks.com/api/workspace/workspace, .../files):
- `GET /api/2.0/workspace/get-status?path=` answers an ObjectInfo (object_type, path, object_id,
  size, ...) or 404 `RESOURCE_DOES_NOT_EXIST`;
- `POST /api/2.0/workspace/mkdirs {"path"}` creates the folder and its parents;
- `POST /api/2.0/workspace/import` (multipart form, as databricks-sdk's `workspace.upload` sends
  it: path, format, overwrite, the file as `content`) needs the parent folder, refuses an existing
  path without overwrite (`RESOURCE_ALREADY_EXISTS`) and content over 10 MB
  (`MAX_NOTEBOOK_SIZE_EXCEEDED`);
- `HEAD /api/2.0/fs/files{path}` answers the size in Content-Length, or 404 with no body;
- `PUT /api/2.0/fs/files{path}?overwrite=` takes the raw bytes, creates parent folders, answers
  204 with no body; only under /Volumes/<catalog>/<schema>/<volume>/ or /Workspace/.
Every request is recorded as a `Call` whose body holds the form fields / query and the content's
sha256 and size, so tests assert exactly what was sent.

A service principal logs in with OAuth M2M as databricks-sdk does it: the OIDC discovery document
(`GET /oidc/.well-known/oauth-authorization-server`), then `POST /oidc/v1/token` with HTTP Basic
client id:secret and `grant_type=client_credentials`; the access token it gets is the test token.
The token requests are counted in `token_requests` (client ids), not recorded as calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from functools import cached_property
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

WORKSPACE = "/api/2.0/workspace/"
FILES = "/api/2.0/fs/files"
# Host metadata every databricks-sdk client reads when it is built (served without a token).
METADATA = "/.well-known/databricks-config"
IMPORT_LIMIT = 10 * 1024 * 1024
OIDC = "/oidc/"
# The service principal the fake knows: client id -> secret.
SERVICE_PRINCIPALS = {"5a6b7c8d-1e2f-4a3b-8c4d-5e6f7a8b9c0d": "sp-test-secret"}


@dataclass
class WorkspaceState:
    files: dict[str, bytes] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=lambda: {"/", "/Workspace", "/Workspace/Shared"})
    next_object_id: int = 4000


def _parents(path: str) -> list[str]:
    parts = path.rstrip("/").split("/")
    return ["/".join(parts[:i]) or "/" for i in range(1, len(parts))]


def _multipart(content_type: str, raw: bytes) -> dict[str, bytes]:
    msg = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + raw
    )
    out: dict[str, bytes] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        out[str(name)] = part.get_payload(decode=True) or b""
    return out


class WorkspaceFilesMixin:
    """Mixed into FakeJobsApi: `serves(path)` routes a request here from its handler."""

    state: Any
    lock: Any
    url: str

    @cached_property
    def workspace(self) -> WorkspaceState:
        return WorkspaceState()

    @cached_property
    def token_requests(self) -> list[str]:
        return []

    @staticmethod
    def serves(path: str) -> bool:
        return path.startswith((WORKSPACE, FILES, OIDC)) or path == METADATA

    def uploads(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(method, endpoint, body) of each write to the Workspace / Files APIs, in order."""
        return [
            (c.method, c.path.removeprefix("/api/2.0/"), c.body)
            for c in self.state.calls
            if self.serves(c.path) and c.method in ("POST", "PUT")
        ]

    def serve_workspace(self, handler: Any, method: str) -> None:
        from tests.fake_databricks import Call

        url = urlsplit(handler.path)
        n = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(n) if n else b""
        if url.path == METADATA:
            return self._reply(handler, 200, {"oidc_endpoint": f"{self.url}/oidc"})
        if url.path.startswith(OIDC):
            return self._oidc(handler, url.path, raw)
        if handler.headers.get("Authorization") != "Bearer dapi-test-token":
            return self._reply(
                handler, 401, {"error_code": "UNAUTHENTICATED", "message": "bad token"}
            )
        body: dict[str, Any] = dict(parse_qsl(url.query))
        content = b""
        ctype = handler.headers.get("Content-Type") or ""
        if ctype.startswith("multipart/form-data"):
            form = _multipart(ctype, raw)
            content = form.pop("content", b"")
            body.update({k: v.decode() for k, v in form.items()})
        elif ctype.startswith("application/json") and raw:
            body.update(json.loads(raw))
        else:
            content = raw
        if content or method == "PUT":
            body["content_sha256"] = hashlib.sha256(content).hexdigest()
            body["content_size"] = len(content)
        with self.lock:
            self.state.calls.append(Call(method, url.path, body))
            queue = self.state.faults.get((method, url.path))
            fault = queue.pop(0) if queue else None
            if fault is None or fault.commit:
                status, out, headers = self._workspace(method, url.path, body, content)
        if fault is not None:
            import time

            time.sleep(fault.sleep)
            status, out = (
                fault.status,
                {"error_code": fault.error_code, "message": "scripted fault"},
            )
            headers = (
                {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            )
        self._reply(handler, status, out, headers)

    def _workspace(
        self, method: str, path: str, body: dict[str, Any], content: bytes
    ) -> tuple[int, dict[str, Any] | None, dict[str, str]]:
        ws = self.workspace
        if path.startswith(FILES):
            target = unquote(path.removeprefix(FILES))
            if method == "HEAD":
                if target not in ws.files:
                    return 404, None, {}
                size = str(len(ws.files[target]))
                return (
                    200,
                    None,
                    {
                        "Content-Length": size,
                        "Content-Type": "application/octet-stream",
                        "Last-Modified": "Sat, 01 Nov 2025 00:00:00 GMT",
                    },
                )
            if method == "PUT":
                if not target.startswith(("/Volumes/", "/Workspace/")) or (
                    target.startswith("/Volumes/") and len(target.split("/")) < 6
                ):
                    return (
                        400,
                        {
                            "error_code": "INVALID_PARAMETER_VALUE",
                            "message": f"not a volume or workspace file path: {target}",
                        },
                        {},
                    )
                if target in ws.files and body.get("overwrite") != "true":
                    return 409, {"error_code": "ALREADY_EXISTS", "message": target}, {}
                ws.dirs.update(_parents(target))
                ws.files[target] = content
                return 204, None, {}
        ep = path.removeprefix(WORKSPACE)
        target = str(body.get("path", ""))
        if method == "GET" and ep == "get-status":
            if target in ws.dirs:
                return 200, {"object_type": "DIRECTORY", "path": target, "object_id": 1}, {}
            if target not in ws.files:
                return (
                    404,
                    {
                        "error_code": "RESOURCE_DOES_NOT_EXIST",
                        "message": f"Path ({target}) doesn't exist.",
                    },
                    {},
                )
            ws.next_object_id += 1
            return (
                200,
                {
                    "object_type": "FILE",
                    "path": target,
                    "object_id": ws.next_object_id,
                    "size": len(ws.files[target]),
                    "created_at": 1761955200000,
                    "modified_at": 1761955200000,
                },
                {},
            )
        if method == "POST" and ep == "mkdirs":
            ws.dirs.update([*_parents(target), target.rstrip("/")])
            return 200, {}, {}
        if method == "POST" and ep == "import":
            parent = target.rsplit("/", 1)[0]
            if parent not in ws.dirs:
                return (
                    404,
                    {
                        "error_code": "RESOURCE_DOES_NOT_EXIST",
                        "message": f"The parent folder ({parent}) does not exist.",
                    },
                    {},
                )
            if target in ws.files and body.get("overwrite") != "true":
                return (
                    400,
                    {
                        "error_code": "RESOURCE_ALREADY_EXISTS",
                        "message": f"{target} already exists.",
                    },
                    {},
                )
            if len(content) > IMPORT_LIMIT:
                return (
                    400,
                    {
                        "error_code": "MAX_NOTEBOOK_SIZE_EXCEEDED",
                        "message": "File size imported is too large.",
                    },
                    {},
                )
            ws.files[target] = content
            return 200, {}, {}
        return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} {path}"}, {}

    def _oidc(self, handler: Any, path: str, raw: bytes) -> None:
        if path == "/oidc/.well-known/oauth-authorization-server":
            return self._reply(
                handler,
                200,
                {
                    "authorization_endpoint": f"{self.url}/oidc/v1/authorize",
                    "token_endpoint": f"{self.url}/oidc/v1/token",
                },
            )
        auth = handler.headers.get("Authorization") or ""
        client_id, _, secret = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")
        form = dict(parse_qsl(raw.decode()))
        if path != "/oidc/v1/token" or form.get("grant_type") != "client_credentials":
            return self._reply(handler, 400, {"error": "invalid_request"})
        if SERVICE_PRINCIPALS.get(client_id) != secret:
            return self._reply(handler, 401, {"error": "invalid_client"})
        self.token_requests.append(client_id)
        return self._reply(
            handler,
            200,
            {"access_token": "dapi-test-token", "token_type": "Bearer", "expires_in": 3600},
        )

    @staticmethod
    def _reply(
        handler: Any, status: int, out: dict[str, Any] | None, headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(out).encode() if out is not None else b""
        try:
            handler.send_response(status)
            for k, v in (headers or {}).items():
                handler.send_header(k, v)
            if out is not None:
                handler.send_header("Content-Type", "application/json")
            if "Content-Length" not in (headers or {}):
                handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            if handler.command != "HEAD":
                handler.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left
