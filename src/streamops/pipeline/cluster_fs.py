"""An fsspec filesystem over the active Spark session's Hadoop FileSystem (the job cluster's login).

On a Databricks job cluster the driver's Python readers and writers (checkpoint guard and
registry, reconstruction, compaction log, backups) reach storage through the cluster's own Spark
session: its Hadoop configuration already holds the one login that works there (a Unity Catalog
external location, or the service principal's OAuth settings from the secret scope). A second,
Python-side login (adlfs, delta-rs) is what fails on a cluster: user code gets no managed identity.

`StorageLogin(kind="cluster_spark").adlfs()` renders `{"protocol": PROTOCOL}`, which makes
`fsspec.core.url_to_fs(url, **options)` pick this class for any URL. Paths keep their scheme
(Hadoop resolves the URI) and names come back in the form they were asked in, so callers that
compare listed names with their root work unchanged. Small files only: reads and writes go through
py4j in one piece (checkpoint files, the registry, Delta commit JSON).
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

from fsspec.spec import AbstractFileSystem

from streamops.bundle.storage import SPARK_PROTOCOL
from streamops.errors import StorageAccessError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

PROTOCOL = SPARK_PROTOCOL
# Java exceptions that mean "the login was refused", not "the file is not there".
_DENIED = (
    "AccessControlException",
    "AuthorizationPermissionMismatch",
    "AuthorizationFailure",
    "AzureException",
    "TokenAccessProviderException",
    "403",
)


def active_session(location: str) -> SparkSession:
    """The driver's active SparkSession; StorageAccessError naming `location` when there is none."""
    from pyspark.sql import SparkSession

    # The JVM's active session is per thread; a driver thread Spark did not start (a callback,
    # the exporter) falls back to the session this process built.
    spark = SparkSession.getActiveSession() or getattr(SparkSession, "_instantiatedSession", None)
    if spark is None:
        raise StorageAccessError(
            f"cannot read {location}: on the job cluster storage is reached through the "
            "cluster's Spark session, and none is active in this process. Fix: start the "
            "session first (streamops.pipeline.session.session_for), on the driver"
        )
    return spark


def storage_error(location: str, exc: BaseException) -> OSError | StorageAccessError:
    """The Python error for a Java one: FileNotFoundError, StorageAccessError (refused), OSError."""
    text = str(exc)
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    if "java.io.FileNotFoundException" in text:
        return FileNotFoundError(2, "No such file or directory", location)
    if any(d in text for d in _DENIED):
        return StorageAccessError(
            f"the job cluster's login was refused for {location} ({first[:300]}). Fix: grant "
            "the cluster's identity read/write on it (the Unity Catalog external location, or "
            "the service principal of targets.<target>.databricks.storage)"
        )
    return OSError(f"{location}: {first[:300]}")


class SparkHadoopFileSystem(AbstractFileSystem):
    """fsspec over the active session's Hadoop FileSystem: ls/info/cat/open/pipe/mkdir/rm/mv."""

    protocol = (PROTOCOL,)
    root_marker = ""
    # The session is looked up per call: one instance must not outlive a stopped session.
    cachable = False

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = str(path)
        if text.startswith(f"{PROTOCOL}://"):
            text = text[len(PROTOCOL) + 3 :]
        return text.rstrip("/") or "/"

    def _call(self, path: str, fn: str, *args: Any) -> Any:
        from py4j.protocol import Py4JJavaError

        spark = active_session(path)
        jvm = spark._jvm
        assert jvm is not None
        jpath = jvm.org.apache.hadoop.fs.Path(path)
        try:
            fs = jpath.getFileSystem(spark._jsc.hadoopConfiguration())
            return getattr(self, fn)(jvm, fs, jpath, *args)
        except Py4JJavaError as exc:
            raise storage_error(path, exc.java_exception) from None

    @staticmethod
    def _entry(name: str, status: Any) -> dict[str, Any]:
        is_dir = bool(status.isDirectory())
        return {
            "name": name,
            "size": 0 if is_dir else int(status.getLen()),
            "type": "directory" if is_dir else "file",
            "mtime": int(status.getModificationTime()) / 1000,
        }

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        return self._call(path, "_info", path)

    def _info(self, jvm: Any, fs: Any, jpath: Any, name: str) -> dict[str, Any]:
        return self._entry(name, fs.getFileStatus(jpath))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        out: list[dict[str, Any]] = self._call(path, "_ls", path)
        return out if detail else [e["name"] for e in out]

    def _ls(self, jvm: Any, fs: Any, jpath: Any, name: str) -> list[dict[str, Any]]:
        status = fs.getFileStatus(jpath)
        if not status.isDirectory():
            return [self._entry(name, status)]
        return [
            self._entry(f"{name.rstrip('/')}/{s.getPath().getName()}", s)
            for s in fs.listStatus(jpath)
        ]

    def exists(self, path: str, **kwargs: Any) -> bool:
        # Only "not there" is False: a refused login must surface, not read as an empty folder.
        try:
            self.info(path)
        except FileNotFoundError:
            return False
        return True

    def isfile(self, path: str) -> bool:
        try:
            return self.info(path)["type"] == "file"
        except FileNotFoundError:
            return False

    def isdir(self, path: str) -> bool:
        try:
            return self.info(path)["type"] == "directory"
        except FileNotFoundError:
            return False

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kw: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        data: bytes = self._call(path, "_read", path)
        return data[start:end] if start is not None or end is not None else data

    def _read(self, jvm: Any, fs: Any, jpath: Any, name: str) -> bytes:
        if fs.getFileStatus(jpath).isDirectory():
            raise IsADirectoryError(21, "Is a directory", name)
        stream = fs.open(jpath)
        try:
            return bytes(jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self._call(path, "_write", bytes(value))

    def _write(self, jvm: Any, fs: Any, jpath: Any, value: bytes) -> None:
        stream = fs.create(jpath, True)
        try:
            stream.write(bytearray(value))
        finally:
            stream.close()

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        path = self._strip_protocol(path)
        if "r" in mode:
            return io.BytesIO(self.cat_file(path))
        if "a" in mode:
            raise NotImplementedError(f"{path}: append is not supported on {PROTOCOL}")
        return _WriteOnClose(self, path)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        self._call(path, "_mkdirs")

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        if not exist_ok and self.exists(path):
            raise FileExistsError(17, "File exists", path)
        self.mkdir(path)

    def _mkdirs(self, jvm: Any, fs: Any, jpath: Any) -> None:
        fs.mkdirs(jpath)

    def rm(self, path: Any, recursive: bool = False, maxdepth: int | None = None) -> None:
        for p in path if isinstance(path, list) else [path]:
            p = self._strip_protocol(p)
            if not self._call(p, "_delete", recursive):
                raise FileNotFoundError(2, "No such file or directory", p)

    def rm_file(self, path: str) -> None:
        self.rm(path)

    def _delete(self, jvm: Any, fs: Any, jpath: Any, recursive: bool) -> bool:
        return bool(fs.delete(jpath, recursive))

    def cp_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """Copy one (small) file: a checkpoint backup or restore, file by file."""
        self.pipe_file(path2, self.cat_file(path1))

    def mv(self, path1: str, path2: str, recursive: bool = False, **kwargs: Any) -> None:
        """Rename; an existing `path2` is replaced (Hadoop's rename refuses to overwrite, so it
        is deleted first: a reader may briefly find none, never half a file)."""
        src, dst = self._strip_protocol(path1), self._strip_protocol(path2)
        self._call(src, "_rename", dst)

    def _rename(self, jvm: Any, fs: Any, jpath: Any, dst: str) -> None:
        target = jvm.org.apache.hadoop.fs.Path(dst)
        if fs.rename(jpath, target):
            return
        if fs.exists(target) and not fs.getFileStatus(target).isDirectory():
            fs.delete(target, False)
            if fs.rename(jpath, target):
                return
        raise OSError(f"cannot rename {jpath.toString()} to {dst}")


class _WriteOnClose(io.BytesIO):
    """A write-mode file: buffered here, written in one piece when closed."""

    def __init__(self, fs: SparkHadoopFileSystem, path: str):
        super().__init__()
        self._fs, self._path = fs, path

    def close(self) -> None:
        if not self.closed:
            data = self.getvalue()
            super().close()
            self._fs.pipe_file(self._path, data)
