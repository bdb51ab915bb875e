"""One data path: the runtime's Spark is the one `make test` runs, and every Kafka login is complete.

Like test_bundle_validation.py, each test edits a copy of the shipped bundle.yml so that exactly one
rule is broken (or deliberately not), and would fail if that rule were removed.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from streamops.bundle import ENV_BOOTSTRAP
from streamops.bundle.runtime import TESTED_RUNTIME, TESTED_SPARK, spark_version_of
from tests.unit.helpers import edited, line_of, only, problems, warnings_of, write

PROD_RUNTIME = ("  prod:", "spark_version: 18.0.x-scala2.13", "spark_version: {runtime}")
PROD_SPARK_PATH = "targets.prod.cluster.spark_version"
PROD_CREDENTIALS = (
    '        username: "{{secrets/streamops-prod/kafka-user}}"\n'
    '        password: "{{secrets/streamops-prod/kafka-password}}"\n'
)


@pytest.fixture(autouse=True)
def _no_bootstrap_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_BOOTSTRAP, raising=False)


def _prod_runtime(runtime: str) -> str:
    after, old, new = PROD_RUNTIME
    return edited((after, old, new.format(runtime=runtime)))


# --- the Spark version ---------------------------------------------------------------------------


def test_tested_spark_is_the_installed_pyspark() -> None:
    installed = ".".join(version("pyspark").split(".")[:2])
    assert installed == TESTED_SPARK, (
        f"pyspark {version('pyspark')} is installed but runtime.TESTED_SPARK is {TESTED_SPARK}: "
        "move them (and TESTED_RUNTIME, the jars' poms) together"
    )
    assert spark_version_of(TESTED_RUNTIME) == TESTED_SPARK


def test_a_runtime_with_another_spark_is_an_error_naming_both_versions(tmp_path: Path) -> None:
    text = _prod_runtime("16.4.x-scala2.13")
    p = only(problems(write(tmp_path, text), "prod"), PROD_SPARK_PATH)
    assert p.severity == "error"
    assert p.line == line_of(text, "spark_version: 16.4.x-scala2.13")
    assert "'16.4.x-scala2.13' runs Apache Spark 3.5" in p.message
    assert f"tested with Apache Spark {TESTED_SPARK}" in p.message
    assert TESTED_RUNTIME in p.fix


def test_an_unknown_runtime_is_a_warning(tmp_path: Path) -> None:
    text = _prod_runtime("99.1.x-scala2.13")
    p = only(warnings_of(write(tmp_path, text), "prod"), PROD_SPARK_PATH)
    assert p.severity == "warning"
    assert p.line == line_of(text, "spark_version: 99.1.x-scala2.13")
    assert "'99.1.x-scala2.13'" in p.message
    assert TESTED_SPARK in p.message
    assert TESTED_RUNTIME in p.fix


def test_the_tested_runtime_gets_no_problem(tmp_path: Path) -> None:
    text = _prod_runtime("18.0.x-scala2.13")
    found = warnings_of(write(tmp_path, text), "prod")
    assert [p.render() for p in found if p.path == PROD_SPARK_PATH] == []


# --- Kafka credentials ---------------------------------------------------------------------------


def test_sasl_without_username_and_password_is_an_error(tmp_path: Path) -> None:
    text = edited((PROD_CREDENTIALS, ""))
    p = only(problems(write(tmp_path, text), "prod"), "targets.prod.kafka.security")
    assert p.severity == "error"
    assert p.message == "protocol SASL_SSL needs a username and a password"
    assert "{{secrets/<scope>/kafka-user}}" in p.fix
    assert p.line == line_of(text, "security:", after="  prod:")


def test_sasl_without_a_mechanism_is_an_error(tmp_path: Path) -> None:
    text = edited(("  prod:", "        sasl_mechanism: PLAIN\n", ""))
    p = only(problems(write(tmp_path, text), "prod"), "targets.prod.kafka.security")
    assert p.message == "protocol SASL_SSL needs a SASL mechanism"
    assert "sasl_mechanism: PLAIN" in p.fix


@pytest.mark.parametrize(("bootstrap", "refused"), [("embedded", False), ("localhost:9092", True)])
def test_sasl_without_credentials_is_fine_only_for_the_embedded_broker(
    tmp_path: Path, bootstrap: str, refused: bool
) -> None:
    # The shipped local target: SASL_PLAINTEXT with no credentials, which the local broker
    # generates at start. Any other broker would get an empty login.
    text = edited(("bootstrap_servers: embedded", f"bootstrap_servers: {bootstrap}"))
    path = write(tmp_path, text)
    if refused:
        p = only(problems(path, "local"), "targets.local.kafka.security")
        assert p.message == "protocol SASL_PLAINTEXT needs a username and a password"
    else:
        found = warnings_of(path, "local")
        assert [p.render() for p in found if p.path.startswith("targets.local.kafka")] == []


# --- a source's own login (`sources.<s>.security`) ------------------------------------------

TELEMETRY = "  telemetry:\n    topic: plant.telemetry\n"


def _telemetry_security(security: str) -> str:
    return edited((TELEMETRY, f"{TELEMETRY}    security:\n{security}"))


def test_a_sources_sasl_login_without_credentials_is_an_error_off_the_embedded_broker(
    tmp_path: Path,
) -> None:
    text = _telemetry_security("      protocol: SASL_SSL\n      sasl_mechanism: PLAIN\n")
    p = only(problems(write(tmp_path, text), "prod"), "sources.telemetry.security")
    assert p.message == "protocol SASL_SSL needs a username and a password"
    assert p.line == line_of(text, "security:", after="  telemetry:")
    # On the local target the embedded broker generates the login.
    found = warnings_of(write(tmp_path, text), "local")
    assert [p.render() for p in found if p.path.startswith("sources.telemetry")] == []


def test_a_sources_sasl_login_without_a_mechanism_is_an_error(tmp_path: Path) -> None:
    text = _telemetry_security("      protocol: SASL_PLAINTEXT\n")
    p = only(problems(write(tmp_path, text), "local"), "sources.telemetry.security")
    assert p.message == "protocol SASL_PLAINTEXT needs a SASL mechanism"


def test_a_sources_credentials_are_secret_references_only(tmp_path: Path) -> None:
    text = _telemetry_security(
        "      protocol: SASL_SSL\n      sasl_mechanism: PLAIN\n"
        "      username: svc-telemetry\n      password: '{{secrets/tel/kafka-password}}'\n"
    )
    p = only(problems(write(tmp_path, text), "prod"), "sources.telemetry.security.username")
    assert "literal value" in p.message and "svc-telemetry" not in p.render()


def test_a_sources_non_databricks_secret_is_an_error_on_databricks(tmp_path: Path) -> None:
    text = _telemetry_security(
        "      protocol: SASL_SSL\n      sasl_mechanism: PLAIN\n"
        "      username: '{{env/TEL_USER}}'\n      password: '{{secrets/tel/kafka-password}}'\n"
    )
    # an error since issue 19 (was a warning): the cluster cannot resolve it
    p = only(problems(write(tmp_path, text), "prod"), "sources.telemetry.security.username")
    assert p.severity == "error"
    assert "{{env/TEL_USER}}" in p.message and "secret scope" in p.fix
