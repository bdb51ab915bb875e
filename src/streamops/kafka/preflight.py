"""Checks before a job starts: the broker answers, the topic exists, partitions vs cores."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from streamops.bundle.validation import PARTITIONS_PER_CORE_MAX
from streamops.clock import REAL, Backoff, Clock, retried
from streamops.errors import KafkaError

if TYPE_CHECKING:
    from streamops.bundle import Bundle


def wait_for_broker(
    conf: dict[str, str],
    *,
    attempts: int = 5,
    first_backoff_s: float = 1.0,
    clock: Clock = REAL,
    say: Callable[[str], None] | None = None,
) -> dict[str, int]:
    """Topic -> partition count, once the broker answers; KafkaError after `attempts` tries.

    `conf`: librdkafka settings (`KafkaClientSettings.librdkafka()`), security included.
    """
    bootstrap = conf.get("bootstrap.servers", "?")
    auth_errors: list[str] = []
    admin = _admin(conf, auth_errors)

    def topics() -> dict[str, int]:
        try:
            md = admin.list_topics(timeout=5)
        except Exception:  # the client raises KafkaException with a transport error
            admin.poll(0.5)  # serves error_cb, which carries the reason for the failure
            if auth_errors:
                raise KafkaError(
                    f"Kafka at {bootstrap} refused the login ({auth_errors[-1]}). Fix: check "
                    "the username and password references under targets.<target>.kafka.security"
                ) from None
            raise
        return {t: len(m.partitions) for t, m in md.topics.items() if m.error is None}

    def retrying(attempt: int, _exc: BaseException, delay: float) -> None:
        if say:
            say(
                f"Kafka at {bootstrap} not reachable (attempt {attempt}/{attempts}); "
                f"retrying in {delay:g} s"
            )

    def give_up(tries: int, exc: BaseException) -> KafkaError:
        return KafkaError(
            f"cannot reach Kafka at {bootstrap} after {tries} attempts ({exc}). Fix: check the "
            "brokers are up and reachable from here, and the bootstrap servers in bundle.yml "
            "(targets.<target>.kafka.bootstrap_servers); locally run `streamops local up`"
        )

    return retried(
        topics,
        attempts=attempts,
        # A refused login is final; anything else from the client may be a broker still starting.
        retryable=lambda exc: not isinstance(exc, KafkaError),
        backoff=Backoff(first_s=first_backoff_s),
        clock=clock,
        on_retry=retrying,
        give_up=give_up,
    )


def _admin(conf: dict[str, str], auth_errors: list[str]) -> Any:
    """An AdminClient that appends each refused login's reason to `auth_errors`."""
    from confluent_kafka import KafkaError as KafkaErrorCode
    from confluent_kafka.admin import AdminClient

    def on_error(err: Any) -> None:
        # librdkafka reports a refused login here; list_topics then only says "timed out".
        if err.code() == KafkaErrorCode._AUTHENTICATION:
            auth_errors.append(err.str())

    # Typed Any: confluent-kafka's stub allows only scalars, but librdkafka takes callbacks too.
    admin_conf: dict[str, Any] = {**conf, "log_level": 0, "socket.timeout.ms": 5000}
    admin_conf["error_cb"] = on_error
    return AdminClient(admin_conf)


def check_source(
    bundle: Bundle,
    job_name: str,
    *,
    cores: int,
    say: Callable[[str], None],
    clock: Clock = REAL,
) -> list[str]:
    """Fail on an unreachable broker or a missing topic; return warnings; log the sizing."""
    job = bundle.job(job_name)
    src_name = job.source
    src = bundle.spec.sources[src_name]
    kafka = bundle.runtime.kafka_for(src_name)
    bootstrap = kafka.bootstrap_servers
    topics = wait_for_broker(kafka.librdkafka(), clock=clock, say=say)
    if src.topic not in topics:
        raise KafkaError(
            f"topic '{src.topic}' (sources.{src_name}.topic in {bundle.path.name}) does not exist "
            f"on {bootstrap}. Fix: create it with {src.partitions} partitions, or correct the "
            "topic name in the bundle"
        )
    partitions = topics[src.topic]
    say(
        f"[{job_name}] topic {src.topic}: {partitions} partitions; {cores} cores available; "
        f"repartition: {job.repartition or 'none'}"
    )
    warnings = []
    if partitions != src.partitions:
        warnings.append(
            f"topic '{src.topic}' has {partitions} partitions but sources.{src_name}.partitions "
            f"declares {src.partitions}; sizing checks assume the declared number. Fix: update the bundle"
        )
    if partitions > PARTITIONS_PER_CORE_MAX * cores:
        warnings.append(
            f"{partitions} partitions far exceed the {cores} cores: "
            f"{-(-partitions // cores)} task waves per batch. Fix: a bigger cluster or fewer partitions"
        )
    if job.cpu_heavy and partitions < cores and not job.repartition:
        warnings.append(
            f"CPU-heavy job '{job_name}' reads {partitions} partitions on {cores} cores: "
            f"{cores - partitions} cores idle. Fix: add `repartition: {cores}` to the job"
        )
    return warnings
