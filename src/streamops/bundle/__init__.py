"""bundle.yml -> `load(path, target)` -> one frozen `Bundle`; the single way config enters."""

from streamops.bundle.kafka_settings import KafkaClientSettings, LocalBrokerLookup
from streamops.bundle.loader import default_target, load, task_bundle
from streamops.bundle.models import BundleSpec, Job, Source, Table, Target
from streamops.bundle.resolved import EMBEDDED, ENV_BOOTSTRAP, Bundle
from streamops.bundle.runtime import RuntimeContext
from streamops.bundle.storage import StorageLogin

__all__ = [
    "EMBEDDED",
    "ENV_BOOTSTRAP",
    "Bundle",
    "BundleSpec",
    "Job",
    "KafkaClientSettings",
    "LocalBrokerLookup",
    "RuntimeContext",
    "Source",
    "StorageLogin",
    "Table",
    "Target",
    "default_target",
    "load",
    "task_bundle",
]
