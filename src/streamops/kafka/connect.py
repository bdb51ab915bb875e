"""Where a source's brokers are and how to log in, resolved at run time (secrets included)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from streamops.bundle import EMBEDDED

if TYPE_CHECKING:
    from streamops.bundle import Bundle, Source


def bootstrap_servers(bundle: Bundle, source: Source) -> str:
    """host:port list for `source`; 'embedded' becomes the running local broker."""
    bs = bundle.bootstrap_servers(source)
    if bs == EMBEDDED:
        from streamops.localstack import LocalStack

        return LocalStack(bundle.cache_dir).broker_bootstrap()
    return bs


def librdkafka_security(bundle: Bundle) -> dict[str, str]:
    """confluent-kafka (librdkafka) settings for the target's Kafka security; never log them."""
    return security_options(bundle, prefix="", librdkafka=True)


def security_options(
    bundle: Bundle, *, prefix: str = "kafka.", librdkafka: bool = False
) -> dict[str, str]:
    """Client security settings with secrets resolved now; never log the result.

    Spark's built-in Kafka source takes a JAAS line; librdkafka (the local source, the offset
    commits, the checks) takes the user and password as separate settings.
    """
    sec = bundle.target.kafka.security
    if sec.protocol == "PLAINTEXT":
        return {}
    opts: dict[str, str] = {f"{prefix}security.protocol": sec.protocol}
    if sec.sasl_mechanism:
        opts[f"{prefix}sasl.mechanism"] = sec.sasl_mechanism
        user = sec.username.resolve() if sec.username else ""
        pwd = sec.password.resolve() if sec.password else ""
        if not librdkafka and bundle.target.resolved_engines.source == "spark-kafka":
            module = (
                "org.apache.kafka.common.security.plain.PlainLoginModule"
                if sec.sasl_mechanism == "PLAIN"
                else "org.apache.kafka.common.security.scram.ScramLoginModule"
            )
            opts[f"{prefix}sasl.jaas.config"] = (
                f'{module} required username="{user}" password="{pwd}";'
            )
        else:
            opts[f"{prefix}sasl.username"] = user
            opts[f"{prefix}sasl.password"] = pwd
    return opts
