"""Airflow settings for tests: set before airflow is first imported (SQLite under .cache/)."""

from __future__ import annotations

import atexit
import os
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".cache" / f"test-airflow-{os.getpid()}"


def configure() -> Path:
    """Point Airflow at a private home for this test process; idempotent."""
    if not HOME.exists():
        HOME.mkdir(parents=True)
        atexit.register(shutil.rmtree, HOME, ignore_errors=True)
    env = {
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{HOME}/airflow.db",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
    }
    for k, v in env.items():
        os.environ.setdefault(k, v)
    return HOME
