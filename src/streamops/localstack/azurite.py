"""Azurite (the Azure Storage emulator), Blob service only, installed by npm into .cache/node."""

from __future__ import annotations

import http.client
import shutil
from dataclasses import dataclass
from pathlib import Path

from streamops.errors import LocalStackError

NAME = "azurite"
MARKER = "azurite"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's fixed, publicly documented development key: not a secret.
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
# A custom account list would replace the well-known account that AzuriteEndpoint assumes.
UNSET_ENV = ("AZURITE_ACCOUNTS",)


@dataclass(frozen=True)
class AzuriteEndpoint:
    """Where a running Azurite serves blobs, and the settings each client library needs."""

    blob_url: str
    account_name: str = ACCOUNT_NAME
    account_key: str = ACCOUNT_KEY

    @property
    def connection_string(self) -> str:
        """Connection string for azure-storage-blob (BlobServiceClient.from_connection_string)."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_url};"
        )

    def deltalake_storage_options(self) -> dict[str, str]:
        """storage_options for deltalake with az:// or abfss:// table URLs."""
        # Not "use_emulator": object_store then ignores "endpoint" and always dials
        # 127.0.0.1:10000. An explicit endpoint plus allow_http serves any port.
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "endpoint": self.blob_url,
            "allow_http": "true",
        }

    def adlfs_options(self) -> dict[str, str]:
        """Keyword arguments for adlfs.AzureBlobFileSystem(**options)."""
        # adlfs has no endpoint option of its own; the connection string carries it.
        return {
            "account_name": self.account_name,
            "account_key": self.account_key,
            "connection_string": self.connection_string,
        }


def blob_url(host: str, port: int) -> str:
    """Blob endpoint URL of the well-known account on host:port."""
    return f"http://{host}:{port}/{ACCOUNT_NAME}"


def binary(cache_dir: Path) -> Path:
    """Path of azurite-blob under cache_dir/node/node_modules/.bin."""
    path = cache_dir / "node" / "node_modules" / ".bin" / "azurite-blob"
    if not path.is_file():
        raise LocalStackError(
            f"Azurite is not installed in .cache/node (looked for {path}). Fix: run `make setup`."
        )
    return path


def argv(cache_dir: Path, host: str, port: int, location: Path) -> list[str]:
    """Command line of a Blob-only Azurite on host:port keeping its data under `location`."""
    script = binary(cache_dir)
    node = shutil.which("node")
    if node is None:
        raise LocalStackError(
            "Azurite cannot start: Node.js is not on PATH. "
            "Fix: apt-get install -y nodejs npm, then run `make setup`."
        )
    return [
        node,
        str(script),
        "--blobHost",
        host,
        "--blobPort",
        str(port),
        "--location",
        str(location),
        "--disableTelemetry",
        # The Python SDKs send API versions newer than a pinned Azurite knows.
        "--skipApiVersionCheck",
        "--loose",
    ]


def answers(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether host:port answers an HTTP request on the blob endpoint (any status)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", f"/{ACCOUNT_NAME}?comp=list")
        conn.getresponse().read()
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return True
