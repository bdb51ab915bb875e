"""What only a Databricks runtime has, and what the local runtime puts in its place: one table.

| Databricks runtime                                   | local runtime                                   |
|------------------------------------------------------|-------------------------------------------------|
| `kafkashaded.org.apache.kafka...` login modules      | a shim jar: subclasses of Apache's, same names  |
| `com.databricks...RocksDBStateStoreProvider`         | Apache Spark's RocksDBStateStoreProvider        |
| `/databricks/python3/bin/python3`                    | the cluster environment's python                |
| the runtime's jars (Kafka connector, Delta)          | `.cache/jvm/spark` (make setup) + storage jars  |
| `dbutils`                                            | nothing: streamops does not use it              |
| Python 3.12 (DBR 18)                                 | CPython 3.11, the project venv's (see below)    |

Python: DBR 18 runs CPython 3.12; the local runtime runs the project venv's CPython 3.11, even
on a machine that also has a 3.12, because the runtime layer links the venv's compiled packages
(cp311 numpy, pyarrow, pydantic-core...). A 3.12 environment would need a second pinned install
of every runtime package. So a library wheel built for cp312 only (the wheelhouse deploy plan
downloads for the cluster's 3.12) does not install here; pure-Python wheels do.
"""

from __future__ import annotations

import os
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

DATABRICKS_PYTHON = "/databricks/python3/bin/python3"
APACHE_ROCKSDB = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
DATABRICKS_ROCKSDB = "com.databricks.sql.streaming.state.RocksDBStateStoreProvider"
# The login modules streamops names in `kafka.sasl.jaas.config` (bundle/kafka_settings.py).
KAFKA_LOGIN_MODULES = (
    "org.apache.kafka.common.security.plain.PlainLoginModule",
    "org.apache.kafka.common.security.scram.ScramLoginModule",
)
SHADED = "kafkashaded."


@dataclass(frozen=True)
class Translation:
    databricks: str
    local: str
    why: str


TRANSLATIONS = (
    Translation(
        f"{SHADED}<Apache Kafka login module>",
        "the same name, a subclass of Apache's, in a shim jar on spark.jars",
        "DBR relocates its Kafka client; the job names the shaded class inside the JAAS text of a "
        "source option, which no Spark conf rewrites, so the runtime provides the class instead",
    ),
    Translation(
        DATABRICKS_ROCKSDB,
        APACHE_ROCKSDB,
        "the job's cluster asks for Databricks' RocksDB provider, which Apache Spark lacks",
    ),
    Translation(
        DATABRICKS_PYTHON,
        "<env>/bin/python",
        "the cluster's spark_env_vars name the runtime's interpreter, absent here",
    ),
    Translation(
        "the runtime's jars",
        ".cache/jvm/spark/*.jar + storage.jars()",
        "DBR ships the Kafka connector and Delta; Apache Spark loads them from spark.jars",
    ),
    Translation("dbutils", "nothing", "streamops never calls dbutils"),
)

CONF_VALUES = {DATABRICKS_ROCKSDB: APACHE_ROCKSDB}


def spark_conf(conf: dict[str, str]) -> dict[str, str]:
    """The cluster's spark_conf with Databricks-only class names replaced by Apache's."""
    return {k: CONF_VALUES.get(v, v) for k, v in conf.items()}


def env_vars(env: dict[str, str], python: Path) -> dict[str, str]:
    """The cluster's spark_env_vars with the runtime's interpreter replaced by `python`."""
    return {k: str(python) if v == DATABRICKS_PYTHON else v for k, v in env.items()}


def kafka_shim_jar(cache_dir: Path) -> Path:
    """A jar of `kafkashaded.<module>` classes, each `extends <module>` with nothing else, written
    as bytecode here (setup needs a JRE only); built once under cache_dir."""
    jar = cache_dir / "kafkashaded-login-modules.jar"
    if jar.is_file():
        return jar
    cache_dir.mkdir(parents=True, exist_ok=True)
    staged = jar.with_suffix(f".{os.getpid()}.tmp")
    with zipfile.ZipFile(staged, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
        for module in KAFKA_LOGIN_MODULES:
            internal = (SHADED + module).replace(".", "/")
            z.writestr(f"{internal}.class", _subclass(internal, module.replace(".", "/")))
    staged.replace(jar)
    return jar


def _subclass(name: str, parent: str) -> bytes:
    """`public class <name> extends <parent> { public <name>() { super(); } }` (class file v52)."""
    pool = [
        _utf8(name),  # 1
        b"\x07" + struct.pack(">H", 1),  # 2: Class name
        _utf8(parent),  # 3
        b"\x07" + struct.pack(">H", 3),  # 4: Class parent
        _utf8("<init>"),  # 5
        _utf8("()V"),  # 6
        b"\x0c" + struct.pack(">HH", 5, 6),  # 7: NameAndType <init>()V
        b"\x0a" + struct.pack(">HH", 4, 7),  # 8: Methodref parent.<init>
        _utf8("Code"),  # 9
    ]
    code = bytes([0x2A, 0xB7, 0x00, 0x08, 0xB1])  # aload_0; invokespecial #8; return
    code_attr = struct.pack(">HHI", 1, 1, len(code)) + code + struct.pack(">HH", 0, 0)
    method = struct.pack(">HHHH", 0x0001, 5, 6, 1) + struct.pack(">HI", 9, len(code_attr))
    return (
        b"\xca\xfe\xba\xbe"
        + struct.pack(">HHH", 0, 52, len(pool) + 1)
        + b"".join(pool)
        + struct.pack(
            ">HHHHHH", 0x0021, 2, 4, 0, 0, 1
        )  # public super; this; super; 0 ifaces/fields
        + method
        + code_attr
        + struct.pack(">H", 0)  # no class attributes
    )


def _utf8(text: str) -> bytes:
    data = text.encode()
    return b"\x01" + struct.pack(">H", len(data)) + data
