"""Storage and catalog of the local Databricks runtime: prod-shaped names, local files.

A job on a Databricks target names its data the way production does: `abfss://` URIs on ADLS
Gen2 for tables and checkpoints, Unity Catalog three-part names (`main.claims.claims_hourly`) for
tables. Neither resolves in Apache Spark here (no ABFS driver, and Azurite has no dfs endpoint;
the session catalog knows two-part names). The runtime maps both through its own Spark conf, so
the job and the library run unchanged (no test-only switch in streamops):

- `abfss://<container>@<account>.dfs.core.windows.net/...` -> a local folder per container:
  Hadoop's ViewFileSystemOverloadScheme takes over the `abfss` scheme with one mount table per
  container; Delta commits there through its LocalLogStore; streaming checkpoints go through the
  plain FileSystem manager (the default FileContext manager wants the ABFS driver).
- `<catalog>.<schema>.<table>` -> a catalog plugin (java/LocalUnityCatalog.java): Delta's
  catalog over the session catalog, schema -> session database (created when missing), and a
  registry folder that keeps each table's location across sessions, as Unity Catalog does across
  clusters. A session extension (java/ThreePartNames.java) lets Delta's `DeltaTableBuilder`
  take such a name, as Databricks' parser does (Apache Spark's allows `db.table` there only).
  Both are compiled once with javac into a jar under the cache folder.

Catalogs share the session's databases: `main.claims` and `dev.claims` are one database, so a
runtime serves one catalog per schema name (a target uses one catalog).

What this does not cover: the driver-side readers (delta-rs, adlfs) do not go through Hadoop,
so they need the same data reachable by their own means.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

CATALOG_CLASS = "streamops.dbr.LocalUnityCatalog"
NAMES_EXTENSION = "streamops.dbr.ThreePartNames"
DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
JAVA_SOURCES = sorted((Path(__file__).resolve().parent / "java").glob("*.java"))
# The pinned Delta jars (`make setup`), which the catalog class extends.
SPARK_JARS = Path(__file__).resolve().parents[2] / ".cache" / "jvm" / "spark"
ABFSS_HOST = ".dfs.core.windows.net"

STORAGE_CONF = {
    "spark.hadoop.fs.abfss.impl": "org.apache.hadoop.fs.viewfs.ViewFileSystemOverloadScheme",
    "spark.hadoop.fs.viewfs.overload.scheme.target.file.impl": "org.apache.hadoop.fs.LocalFileSystem",
    "spark.delta.logStore.abfss.impl": "io.delta.storage.LocalLogStore",
    "spark.sql.streaming.checkpointFileManagerClass": (
        "org.apache.spark.sql.execution.streaming.checkpointing.FileSystemBasedCheckpointFileManager"
    ),
}


def spark_conf(
    mounts: Mapping[str, Path],
    catalogs: Iterable[str] = ("main",),
    *,
    registry: Path | None = None,
) -> dict[str, str]:
    """Spark conf that lands each `abfss://<container>@<account>.dfs.core.windows.net[/path]`
    of `mounts` in its local folder, and resolves `<catalog>.<schema>.<table>` for `catalogs`.

    `registry` is the folder where the catalogs keep each table's location, so a later session
    (the next run, the nightly compaction) finds tables an earlier one created; None keeps the
    names for the session only. Put `jars(cache_dir)` on `spark.jars` with this conf.
    `spark.sql.extensions` here lists Delta's extension, then the three-part-name parser (which
    must wrap Delta's): a caller that sets more extensions keeps this order.
    """
    conf = dict(STORAGE_CONF)
    conf["spark.sql.extensions"] = f"{DELTA_EXTENSION},{NAMES_EXTENSION}"
    for url, folder in mounts.items():
        conf.update(_mount(url, folder))
    for name in catalogs:
        conf[f"spark.sql.catalog.{name}"] = CATALOG_CLASS
        if registry is not None:
            conf[f"spark.sql.catalog.{name}.registry"] = str(registry.resolve() / name)
    return conf


def _mount(url: str, folder: Path) -> dict[str, str]:
    """The mount-table entry that maps one container (or a folder in it) to `folder`."""
    parts = urlsplit(url)
    if parts.scheme != "abfss" or "@" not in parts.netloc or not parts.netloc.endswith(ABFSS_HOST):
        raise ValueError(
            f"mount {url!r}: not an ADLS Gen2 container URL. Fix: key mounts by "
            f"abfss://<container>@<account>{ABFSS_HOST}[/<path>]"
        )
    table = f"spark.hadoop.fs.viewfs.mounttable.{parts.netloc}"
    target = folder.resolve().as_uri()
    path = parts.path.rstrip("/")
    # A whole container is the mount table's fallback: ViewFs allows no link on its root.
    if not path:
        return {f"{table}.linkFallback": target}
    return {f"{table}.link.{path}": target}


def jars(cache_dir: Path) -> list[Path]:
    """The jars the runtime session needs besides Spark's and the pinned Delta and Kafka jars:
    the catalog plugin and its parser extension, compiled on first use and cached under
    `cache_dir` by sources and classpath."""
    classpath = _compile_classpath()
    digest = hashlib.sha256()
    for source in JAVA_SOURCES:
        digest.update(source.read_bytes())
    for jar in classpath:
        digest.update(jar.name.encode())
    jar = cache_dir / f"local-unity-catalog-{digest.hexdigest()[:16]}.jar"
    if not jar.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        _build(jar, classpath)
    return [jar]


def _compile_classpath() -> list[Path]:
    """Spark's jars (the pyspark package's) and the pinned Delta jars."""
    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise RuntimeError("pyspark is not installed in this interpreter. Fix: run `make setup`")
    spark = sorted((Path(spec.origin).parent / "jars").glob("*.jar"))
    delta = sorted(SPARK_JARS.glob("delta-*.jar"))
    if not delta:
        raise RuntimeError(f"the Delta jars are not in {SPARK_JARS}. Fix: run `make setup`")
    return spark + delta


def _build(jar: Path, classpath: list[Path]) -> None:
    javac = shutil.which("javac")
    if javac is None:
        raise RuntimeError(
            "javac is not on PATH: it compiles the catalog plugin of the local Databricks "
            "runtime. Fix: install a JDK 17 (e.g. apt-get install openjdk-17-jdk-headless)"
        )
    with tempfile.TemporaryDirectory(dir=jar.parent) as tmp:
        classes = Path(tmp) / "classes"
        cmd = [javac, "-nowarn", "-d", str(classes), "-cp", os.pathsep.join(map(str, classpath))]
        done = subprocess.run([*cmd, *map(str, JAVA_SOURCES)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"javac failed:\n{done.stdout}{done.stderr}")
        staged = Path(tmp) / jar.name
        with zipfile.ZipFile(staged, "w") as z:
            z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for cls in sorted(classes.rglob("*.class")):
                z.write(cls, cls.relative_to(classes).as_posix())
        # Renamed into place whole: a concurrent build or reader never sees half a jar.
        staged.replace(jar)
    for stale in jar.parent.glob("local-unity-catalog-*.jar"):
        if stale != jar:
            stale.unlink(missing_ok=True)  # built from sources that no longer exist
