"""Frozen models of bundle.yml. Shapes and single-field rules live here; cross-field rules in validation.py."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from streamops.bundle.durations import DurationField, parse_duration
from streamops.bundle.secrets import SecretField

NAME = r"^[a-z][a-z0-9_]*$"
SPARK_TYPES = ("string", "int", "long", "double", "float", "boolean", "timestamp", "date")
_DECIMAL = re.compile(r"^decimal\(\s*\d+\s*,\s*\d+\s*\)$")
NUMERIC = ("int", "long", "double", "float")


class Frozen(BaseModel):
    """Base: unknown keys are errors, nothing can be changed after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# --- targets -------------------------------------------------------------------------------


class KafkaSecurity(Frozen):
    """How clients log in. With `bootstrap_servers: embedded`, a SASL protocol without username/
    password uses the credentials the local broker generated at its start."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    username: SecretField | None = None
    password: SecretField | None = None


class KafkaSettings(Frozen):
    # "embedded" means the broker that `streamops local up` starts (local target only).
    bootstrap_servers: str
    security: KafkaSecurity = KafkaSecurity()


class CheckpointSettings(Frozen):
    """Checkpoint backups and the integrity DAG (docs/checkpoints.md)."""

    backup_root: str | None = None  # default: <checkpoint_root>/_backups
    backup_retention: int = Field(7, ge=1)
    integrity_schedule: str = "@hourly"
    # The reset guard at every job start (and deploy). `false` turns it off: every run's log then
    # says so, since a reset checkpoint would go unnoticed.
    guard: bool = True


class Cluster(Frozen):
    """Compute that runs the jobs; sizes feed the partitions-vs-cores and state-size checks."""

    workers: int = Field(1, ge=0)
    cores_per_worker: int = Field(4, ge=1)
    memory_gb_per_worker: float = Field(16, gt=0)
    # Share of executor memory the state store may take before the forecast warns.
    state_memory_fraction: float = Field(0.25, gt=0, le=1)
    spark_version: str | None = None
    node_type_id: str | None = None

    @property
    def total_cores(self) -> int:
        return max(1, self.workers) * self.cores_per_worker

    @property
    def total_memory_gb(self) -> float:
        return max(1, self.workers) * self.memory_gb_per_worker


# Deploy destinations: a workspace folder, or a Unity Catalog volume (catalog, schema, volume).
_ARTIFACT_ROOT = re.compile(r"^/(Workspace(/[^/]+)+|Volumes/[^/]+/[^/]+/[^/]+(/[^/]+)*)/?$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class Permission(Frozen):
    """A workspace group's access to the deployed job (Databricks job permissions)."""

    group: str = Field(min_length=1)
    level: Literal["CAN_VIEW", "CAN_MANAGE_RUN", "CAN_MANAGE"]


class Notifications(Frozen):
    """Who hears of a failed run, or of a backlog beyond the job's health rules."""

    emails: list[str] = Field(default_factory=list)
    # Ids of the workspace's notification destinations (Slack, Teams, PagerDuty, webhooks).
    destinations: list[str] = Field(default_factory=list)

    @field_validator("emails")
    @classmethod
    def _emails(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", e)]
        if bad:
            raise ValueError(f"'{bad[0]}' is not an email address; write e.g. oncall@example.com")
        return v


class StorageAccess(Frozen):
    """How the job cluster reaches ADLS: a Unity Catalog external location (nothing on the
    cluster), or a service principal whose OAuth settings go into the cluster's spark_conf."""

    via: Literal["unity_catalog", "service_principal"] = "unity_catalog"
    client_id: str | None = None  # application (client) id of the service principal
    tenant_id: str | None = None  # Entra ID tenant
    client_secret: SecretField | None = None  # {{secrets/<scope>/<key>}}: Databricks resolves it

    @model_validator(mode="after")
    def _complete(self) -> StorageAccess:
        if self.via == "unity_catalog":
            extra = [k for k in ("client_id", "tenant_id", "client_secret") if getattr(self, k)]
            if extra:
                raise ValueError(
                    f"{', '.join(extra)} only mean something with "
                    "`via: service_principal`; remove them or set that"
                )
            return self
        missing = [k for k in ("client_id", "tenant_id", "client_secret") if not getattr(self, k)]
        if missing:
            raise ValueError(
                f"via: service_principal needs {', '.join(missing)}: `client_id: <application "
                "id>`, `tenant_id: <tenant id>`, `client_secret: '{{secrets/<scope>/<key>}}'`"
            )
        for k in ("client_id", "tenant_id"):
            if not _UUID.match(getattr(self, k)):
                raise ValueError(
                    f"{k} '{getattr(self, k)}' is not a UUID; copy it from the "
                    "service principal's overview in Entra ID"
                )
        if self.client_secret is not None and self.client_secret.kind != "secrets":
            raise ValueError(
                "client_secret must be a Databricks secret reference "
                "'{{secrets/<scope>/<key>}}': the cluster resolves only those in spark_conf"
            )
        return self


class DatabricksSettings(Frozen):
    host: str | None = None
    token: SecretField | None = None
    airflow_conn_id: str = Field("databricks_default", min_length=1)
    # --- deploy (streamops.deploy): how each job becomes a Databricks job ---------------------
    # Where bundle.yml and jobs/ are synced in the workspace; default /Workspace/Shared/<project>.
    workspace_root: str | None = None
    # Where deploy uploads the project's wheel, jobs/stream.py, jobs/compact.py and bundle.yml,
    # each under a folder named by its content hash: a Unity Catalog volume
    # (/Volumes/<catalog>/<schema>/<volume>/...) or a workspace folder (/Workspace/...).
    # Required on Databricks targets (validation), with no derived default: jobs lose access to
    # workspace files after 30 days and a stream runs longer, so the default would have to be a
    # volume, and a volume must exist (deploy cannot create one without CREATE VOLUME) and is
    # governed (whoever may READ it may read the code the job runs). A guessed
    # catalog/schema/volume would fail at the first upload, far from bundle.yml. /Workspace/...
    # stays possible, with a warning. Unset (targets that are not Databricks, such as the local
    # one driving the compaction's job engine): <workspace_root>/.streamops/artifacts.
    artifact_root: str | None = None
    # How the job cluster gets the wheel's dependencies: `index` (pip, from the workspace's package
    # index) or `wheelhouse` (wheels downloaded here and uploaded beside the wheel, for clusters
    # without internet access).
    dependencies: Literal["index", "wheelhouse"] = "index"
    # Extra Jobs API 2.2 library specs (`- whl: ...`, `- pypi: {package: ...}`), installed beside
    # the project's wheel.
    libraries: list[dict[str, Any]] = Field(default_factory=list)
    tags: dict[str, str] = Field(default_factory=dict)
    # Wait between automatic retries of a failed triggered run (`continuous: false` streaming
    # jobs: unlimited retries; catch-up jobs: 3). Continuous jobs take no task retry settings:
    # the platform restarts them after any exit, with exponential backoff after failures.
    retry_interval: DurationField = parse_duration("1 minute")
    # Extra Jobs API 2.2 settings merged into every job (e.g. email_notifications, health) and
    # into the job cluster (e.g. spark_conf, azure_attributes); key names are validated.
    job_settings: dict[str, Any] = Field(default_factory=dict)
    cluster_settings: dict[str, Any] = Field(default_factory=dict)
    # --- governance (streamops.deploy.governance) ------------------------------------------
    # Application id of the service principal the job runs as (and the cluster's single user).
    run_as: str | None = None
    # Cluster access mode: SINGLE_USER / DATA_SECURITY_MODE_DEDICATED (dedicated to run_as).
    # The standard (shared) modes USER_ISOLATION / DATA_SECURITY_MODE_STANDARD parse, so that
    # validation can refuse them naming the reason (rule `cluster_access_mode`): the runner
    # needs sparkContext and driver-side state in foreachBatch, which they forbid.
    data_security_mode: Literal[
        "SINGLE_USER",
        "USER_ISOLATION",
        "DATA_SECURITY_MODE_DEDICATED",
        "DATA_SECURITY_MODE_STANDARD",
    ] = "SINGLE_USER"
    storage: StorageAccess = StorageAccess()
    permissions: list[Permission] = Field(default_factory=list)
    notifications: Notifications = Notifications()

    @field_validator("artifact_root")
    @classmethod
    def _artifact_root(cls, v: str | None) -> str | None:
        if v is not None and not _ARTIFACT_ROOT.match(v):
            raise ValueError(
                f"'{v}' is neither a workspace folder nor a Unity Catalog volume; use "
                "/Workspace/<folder>/... or /Volumes/<catalog>/<schema>/<volume>/..."
            )
        return v.rstrip("/") if v else v

    @field_validator("run_as")
    @classmethod
    def _run_as(cls, v: str | None) -> str | None:
        if v is not None and not _UUID.match(v):
            raise ValueError(
                f"'{v}' is not a service principal's application id (a UUID such as "
                "'8f4c1a2e-0000-4000-8000-000000000001'); jobs run as a service principal, "
                "never as a person"
            )
        return v


# A target without a `databricks:` section reads as one with every default: the fallbacks of
# code that asks (connection id, access mode, tags, libraries...) live here, in the model.
NO_DATABRICKS = DatabricksSettings()


class AzureLogin(Frozen):
    """How the metric exporter logs in to Azure Monitor (Logs Ingestion) from the job cluster,
    where user code gets no managed identity (so never DefaultAzureCredential there):
    `service_principal` (client secret from a secret scope) or `service_credential` (a Unity
    Catalog service credential, DBR 16.2+)."""

    via: Literal["service_principal", "service_credential"]
    tenant_id: str | None = None
    client_id: str | None = None
    client_secret: SecretField | None = None  # '{{secrets/<scope>/<key>}}' on Databricks
    # Entra ID authority (sovereign clouds, e.g. https://login.microsoftonline.us); default public.
    authority_host: str | None = None
    name: str | None = None  # the Unity Catalog service credential (service_credential)

    @model_validator(mode="after")
    def _complete(self) -> AzureLogin:
        if self.via == "service_credential":
            extra = [k for k in ("tenant_id", "client_id", "client_secret") if getattr(self, k)]
            if not self.name or extra:
                raise ValueError(
                    "via: service_credential takes only `name: <Unity Catalog service "
                    "credential>`" + (f"; remove {', '.join(extra)}" if extra else "")
                )
            return self
        missing = [k for k in ("tenant_id", "client_id", "client_secret") if not getattr(self, k)]
        if missing or self.name:
            raise ValueError(
                "via: service_principal needs tenant_id, client_id and client_secret "
                "('{{secrets/<scope>/<key>}}')"
                + (f"; missing {', '.join(missing)}" if missing else "; remove `name`")
            )
        return self


class Monitoring(Frozen):
    """Where a target's metrics and pages go (streamops.monitoring.metrics, streamops.monitoring.paging)."""

    # jsonl: <state_dir>/metrics/<query>.jsonl; azure-monitor: a Log Analytics workspace, queried
    # with azure-monitor-query (the custom table is fed by a Data Collection Rule). Default: jsonl
    # on a local target, azure-monitor on a Databricks one (Target._metrics_default).
    metrics: Literal["jsonl", "azure-monitor"] = "jsonl"
    paging: Literal["log", "pagerduty", "webhook"] = "log"
    pagerduty_routing_key: SecretField | None = None
    pagerduty_url: str = "https://events.pagerduty.com/v2/enqueue"
    webhook_url: SecretField | None = None
    workspace_id: str | None = None  # Log Analytics workspace (azure-monitor)
    logs_endpoint: str = "https://api.loganalytics.io/v1"
    metrics_table: str = Field("StreamopsMetrics_CL", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    # Logs Ingestion API (azure-monitor): the data collection endpoint and rule that feed the table.
    ingestion_endpoint: str | None = None  # https://<dce>.<region>.ingest.monitor.azure.com
    dcr_immutable_id: str | None = None  # dcr-<32 hex>
    dcr_stream: str = "Custom-StreamopsMetrics_CL"
    # Buffered metric batches per exporter before new ones are dropped (and counted).
    buffer_batches: int = Field(1000, ge=1)
    # After each batch, commit its end offsets to a consumer group named after the query.
    commit_offsets: bool = True
    # The exporter's Azure login (azure-monitor). Default on a Databricks target: the storage
    # service principal (databricks.storage.via: service_principal); see Target.metrics_login.
    azure_login: AzureLogin | None = None
    # Failed sends in a row after which the job pages "monitoring blind" (once; resolved when a
    # send works again). A few, not one: a throttled or briefly unreachable sink retries by itself.
    blind_after_failures: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _complete(self) -> Monitoring:
        if self.paging == "pagerduty" and self.pagerduty_routing_key is None:
            raise ValueError(
                "paging: pagerduty needs "
                "`pagerduty_routing_key: '{{secrets/<scope>/pagerduty-routing-key}}'`"
            )
        if self.paging == "webhook" and self.webhook_url is None:
            raise ValueError(
                "paging: webhook needs `webhook_url: '{{secrets/<scope>/pager-webhook-url}}'`"
            )
        if self.metrics == "azure-monitor" and not self.workspace_id:
            raise ValueError(
                "metrics: azure-monitor (the default on Databricks targets: a driver's disk is "
                "seen by no alert) needs `workspace_id: <Log Analytics id>`"
            )
        if self.metrics == "azure-monitor" and not (
            self.ingestion_endpoint and self.dcr_immutable_id
        ):
            raise ValueError(
                "metrics: azure-monitor (the default on Databricks targets) needs "
                "`ingestion_endpoint: https://<dce>.<region>.ingest."
                "monitor.azure.com` and `dcr_immutable_id: dcr-...` (the data collection rule)"
            )
        return self


class Target(Frozen):
    mode: Literal["local", "databricks"]
    kafka: KafkaSettings
    storage_root: str
    checkpoint_root: str | None = None
    cluster: Cluster = Cluster()
    databricks: DatabricksSettings | None = None
    # Rule of thumb for output files; the local target scales it down for small samples.
    file_size_band_mb: tuple[float, float] = (50.0, 500.0)
    checkpoints: CheckpointSettings = Field(default_factory=lambda: CheckpointSettings())
    monitoring: Monitoring = Monitoring()
    # Where this machine's side of the target (Airflow tasks, the CLI) keeps its own state: the
    # wheel it builds, pages log, open alerts, reports, metrics JSON lines. Default: the bundle's
    # .cache/ on a local target; on a Databricks one $STREAMOPS_STATE_DIR, else a folder under the
    # OS temp dir, never the project (a DAG folder may be read-only). Resolved: Bundle.state_dir.
    state_dir: str | None = None

    @field_validator("state_dir")
    @classmethod
    def _state_dir(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError(
                f"'{v}' is not an absolute folder; a relative one would land in the project (or "
                "DAG) folder. Use an absolute path such as /var/lib/streamops, or leave it out"
            )
        return v

    @property
    def metrics_login(self) -> AzureLogin | None:
        """The exporter's Azure login: `monitoring.azure_login`, else on a Databricks target the
        storage service principal, else None (off Databricks: the machine's own credential)."""
        if self.monitoring.azure_login is not None or self.mode != "databricks":
            return self.monitoring.azure_login
        sa = self.databricks_or_default.storage
        if sa.via != "service_principal":
            return None
        return AzureLogin(
            via="service_principal",
            tenant_id=sa.tenant_id,
            client_id=sa.client_id,
            client_secret=sa.client_secret,
        )

    @property
    def databricks_or_default(self) -> DatabricksSettings:
        """The target's Databricks settings, or the defaults when it has none (NO_DATABRICKS)."""
        return self.databricks if self.databricks is not None else NO_DATABRICKS

    @model_validator(mode="before")
    @classmethod
    def _metrics_default(cls, data: Any) -> Any:
        # On Databricks the driver's local disk is gone with the cluster and read by no alert, so
        # metrics go to Azure Monitor unless the target says otherwise.
        if isinstance(data, dict) and data.get("mode") == "databricks":
            mon = data.get("monitoring")
            if mon is None:
                return {**data, "monitoring": {"metrics": "azure-monitor"}}
            if isinstance(mon, dict) and "metrics" not in mon:
                return {**data, "monitoring": {**mon, "metrics": "azure-monitor"}}
        return data

    @field_validator("file_size_band_mb")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1]:
            raise ValueError("write [low, high] in MB with 0 < low < high, e.g. [50, 500]")
        return v


# --- sources, schema ----------------------------------------------------------------------


class Source(Frozen):
    topic: str = Field(min_length=1)
    partitions: int = Field(ge=1)
    max_lateness: DurationField
    events_per_second: float = Field(gt=0)
    bytes_per_event: int = Field(gt=0)
    key_cardinality: int = Field(gt=0)
    bootstrap_servers: str | None = None
    # How this source's clients log in; default: the target's `kafka.security`. Lets two sources
    # of one job (a join) sit on two clusters or listeners with different logins.
    security: KafkaSecurity | None = None
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    fail_on_data_loss: bool = True


class FieldSpec(Frozen):
    type: str
    required: bool = True

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        v = v.strip().lower()
        if v not in SPARK_TYPES and not _DECIMAL.match(v):
            raise ValueError(
                f"unknown type '{v}'; use one of {', '.join(SPARK_TYPES)}, decimal(p,s)"
            )
        return v


def _field_spec(v: Any) -> Any:
    return {"type": v} if isinstance(v, str) else v


# --- steps --------------------------------------------------------------------------------


class WatermarkSpec(Frozen):
    column: str
    delay: DurationField


class Metric(Frozen):
    name: str = Field(pattern=NAME)
    fn: Literal["count", "sum", "avg", "min", "max", "approx_count_distinct"]
    column: str | None = None

    @model_validator(mode="after")
    def _column(self) -> Metric:
        if self.fn != "count" and not self.column:
            raise ValueError(f"'{self.fn}' needs a column: add `column: <field>`")
        return self


class WindowAggregateSpec(Frozen):
    window: DurationField
    slide: DurationField | None = None
    group_by: list[str] = Field(default_factory=list)
    metrics: list[Metric] = Field(min_length=1)

    @field_validator("window", "slide")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        # Spark refuses empty windows; the state forecast would divide by zero.
        if v is not None and v.seconds <= 0:
            raise ValueError("a window (or slide) of zero never closes; use e.g. '5 minutes'")
        return v


class JoinSpec(Frozen):
    """Stream-stream join with another source; both sides need a watermark."""

    source: str
    schema_: dict[str, FieldSpec] = Field(alias="schema")
    watermark: WatermarkSpec
    on: list[str] = Field(min_length=1)
    within: DurationField
    how: Literal["inner", "left_outer"] = "inner"

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema(cls, v: Any) -> Any:
        return {k: _field_spec(x) for k, x in v.items()} if isinstance(v, dict) else v


class WatermarkStep(Frozen):
    watermark: WatermarkSpec


class WindowAggregateStep(Frozen):
    window_aggregate: WindowAggregateSpec


class JoinStep(Frozen):
    join: JoinSpec


STEP_KINDS = ("watermark", "window_aggregate", "join")


def _step_kind(v: Any) -> str | None:
    if isinstance(v, dict):
        keys = [k for k in v if k in STEP_KINDS]
        return keys[0] if len(keys) == 1 and len(v) == 1 else None
    for kind in STEP_KINDS:
        if hasattr(v, kind):
            return kind
    return None


Step = Annotated[
    Annotated[WatermarkStep, Tag("watermark")]
    | Annotated[WindowAggregateStep, Tag("window_aggregate")]
    | Annotated[JoinStep, Tag("join")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message="each step is a mapping with exactly one of: watermark, window_aggregate, join",
    ),
]


# --- jobs, tables, alerts -----------------------------------------------------------------


class Trigger(Frozen):
    processing_time: DurationField | None = None
    available_now: bool = False

    @model_validator(mode="after")
    def _one(self) -> Trigger:
        if (self.processing_time is None) == (not self.available_now):
            raise ValueError(
                "set exactly one of `processing_time: '2 minutes'` or `available_now: true`"
            )
        return self


# How far an event time may lie ahead of the batch's processing time before the event is
# quarantined as event_time_in_future: producers' clocks drift by seconds, not minutes.
DEFAULT_CLOCK_SKEW = parse_duration("5 minutes")


class EventTypeSpec(Frozen):
    """Events carry a type field; only these types are processed, others are quarantined."""

    field: str
    values: list[str] = Field(min_length=1)


class Job(Frozen):
    query_name: str = Field(pattern=NAME, description="stable streaming query name; never rename")
    description: str = ""
    source: str
    schema_: dict[str, FieldSpec] = Field(alias="schema", min_length=1)
    event_time: str
    steps: list[Step] = Field(default_factory=list)
    sink: str
    trigger: Trigger
    repartition: int | None = Field(None, ge=1)
    max_offsets_per_trigger: int | None = Field(None, ge=1)
    cpu_heavy: bool = False
    checkpoint: str | None = None
    state_row_bytes: int | None = Field(None, gt=0)
    # Quarantine rules: what makes an event unusable (besides bad JSON, types, missing fields).
    key_required: bool = True
    max_key_bytes: int = Field(1024, ge=1)
    max_event_bytes: int = Field(1_048_576, ge=1)
    # Default: DEFAULT_CLOCK_SKEW, capped at the watermark delay (_default_clock_skew).
    max_clock_skew: DurationField = DEFAULT_CLOCK_SKEW
    event_type: EventTypeSpec | None = None
    # Databricks: a continuous job (always on; the platform restarts it after any exit, with
    # exponential backoff after failures) or a triggered one. Default (_continuous_default):
    # continuous for a streaming trigger (processing_time), since a triggered run whose query
    # stopped ends and nothing starts it again; triggered for a catch-up (available_now), which
    # stops by design once caught up.
    continuous: bool = False
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("schema_", mode="before")
    @classmethod
    def _schema(cls, v: Any) -> Any:
        return {k: _field_spec(x) for k, x in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="before")
    @classmethod
    def _continuous_default(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "continuous" in data:
            return data
        trigger = data.get("trigger")
        if isinstance(trigger, dict):
            catch_up = trigger.get("available_now")
        else:
            catch_up = getattr(trigger, "available_now", False)
        return {**data, "continuous": catch_up is not True}

    @model_validator(mode="before")
    @classmethod
    def _default_clock_skew(cls, data: Any) -> Any:
        # An event accepted up to max_clock_skew ahead of the clock may set the watermark; a skew
        # longer than the watermark delay would move it past on-time events (rules.clock_skew
        # refuses one written so). So the default never exceeds the job's watermark delay.
        if not isinstance(data, dict) or "max_clock_skew" in data:
            return data
        skew = DEFAULT_CLOCK_SKEW
        for step in data.get("steps") or []:
            is_dict = isinstance(step, dict)
            wm = step.get("watermark") if is_dict else getattr(step, "watermark", None)
            if wm is None:
                continue
            raw = wm.get("delay") if isinstance(wm, dict) else getattr(wm, "delay", None)
            try:
                delay = parse_duration(raw)
            except ValueError:
                break  # the delay's own validation names the problem
            if delay.seconds < skew.seconds:
                skew = delay
            break
        return {**data, "max_clock_skew": skew}

    @property
    def bronze_query_name(self) -> str:
        """The bronze query (raw events + quarantine) has its own stable name and checkpoint."""
        return f"{self.query_name}_bronze"

    @property
    def watermark(self) -> WatermarkSpec | None:
        for s in self.steps:
            if isinstance(s, WatermarkStep):
                return s.watermark
        return None

    @property
    def aggregate(self) -> WindowAggregateSpec | None:
        for s in self.steps:
            if isinstance(s, WindowAggregateStep):
                return s.window_aggregate
        return None

    @property
    def join(self) -> JoinSpec | None:
        for s in self.steps:
            if isinstance(s, JoinStep):
                return s.join
        return None

    @property
    def is_stateful(self) -> bool:
        return self.aggregate is not None or self.join is not None


class Reader(Frozen):
    """A streaming query that reads a table (Delta as a source); VACUUM must keep what it may read."""

    name: str = Field(min_length=1)
    max_lag: DurationField


class Table(Frozen):
    name: str | None = None  # Unity Catalog name (catalog.schema.table) on Databricks
    location: str | None = None
    partition_by: list[str] = Field(default_factory=list)
    zorder_by: list[str] = Field(default_factory=list)
    # Liquid clustering keys: new tables are created `CLUSTER BY` them and compacted with plain
    # OPTIMIZE (incremental clustering). Excludes partition_by and zorder_by.
    cluster_by: list[str] = Field(default_factory=list)
    # A Unity Catalog table with predictive optimization in effect is left to it ("defer": the
    # nightly run skips OPTIMIZE and VACUUM); "compact" runs them anyway.
    predictive_optimization: Literal["defer", "compact"] = "defer"
    target_file_size_mb: int = Field(256, ge=1)
    # Streaming readers of this table: VACUUM retention covers the slowest one's lag + a margin.
    readers: list[Reader] = Field(default_factory=list)
    # A partition column derived from event time (date, hour): its newest value is still being
    # written, so compaction leaves it alone until the next run.
    time_partition: str | None = None


class Alerts(Frozen):
    """Alert thresholds; every job is evaluated against these."""

    lag_records_per_partition: int = Field(100_000, ge=1)
    lag_for: DurationField = parse_duration("10 minutes")
    batch_duration_ratio: float = Field(1.0, gt=0)
    consecutive_slow_batches: int = Field(3, ge=1)
    state_store_mb: float = Field(4096, gt=0)
    state_growth_pct_per_hour: float = Field(50, gt=0)
    dropped_rows_per_minute: float = Field(100, ge=0)
    quarantined_rows_per_minute: float = Field(100, ge=0)
    stalled_after: DurationField = parse_duration("15 minutes")
    # How far the event-time watermark may run ahead of processing time before a page. Events
    # beyond max_clock_skew are quarantined and max_clock_skew <= the watermark delay, so on a
    # sane stream the watermark stays behind the clock: any lead means it was poisoned.
    watermark_ahead: DurationField = parse_duration("0 seconds")
    runbook_url: str | None = None


_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?-]+$")


class Compaction(Frozen):
    """Nightly Delta compaction (OPTIMIZE, Z-ORDER on changed partitions, safe VACUUM)."""

    schedule: str = "0 2 * * *"
    timezone: str = "UTC"
    # Added to the slowest reader's lag to get the VACUUM retention (never below 168 hours).
    vacuum_margin: DurationField = parse_duration("24 hours")
    # Commit conflicts with streaming writers: retries with exponential backoff from `backoff`.
    max_retries: int = Field(5, ge=0, le=20)
    backoff: DurationField = parse_duration("2 seconds")
    # Airflow task retries per table before it pages, and the wait between them.
    task_retries: int = Field(2, ge=0)
    task_retry_delay: DurationField = parse_duration("5 minutes")
    # A file below this share of the table's target size counts as small in the report.
    small_file_fraction: float = Field(0.25, gt=0, le=1)
    # SQL warehouse per Databricks target that runs OPTIMIZE / VACUUM (the databricks-sql engine).
    warehouse_ids: dict[str, str] = Field(default_factory=dict)
    # How Databricks targets run it: a one-time job run of jobs/compact.py ("databricks-job": the
    # OPTIMIZE commit carries the compaction marker) or statements on a SQL warehouse
    # ("databricks-sql": no session settings there, so no marker: every partition is a candidate).
    databricks_engine: Literal["databricks-job", "databricks-sql"] = "databricks-job"

    @field_validator("schedule")
    @classmethod
    def _cron(cls, v: str) -> str:
        parts = v.split()
        if len(parts) != 5 or not all(_CRON_FIELD.match(p) for p in parts):
            raise ValueError(
                f"'{v}' is not a cron expression; write five fields "
                "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'"
            )
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone '{v}'; use an IANA name such as 'UTC' or 'Europe/Berlin'"
            ) from None
        return v


class BundleSpec(Frozen):
    """The whole bundle.yml, as written."""

    version: Literal[1] = 1
    project: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    targets: dict[str, Target] = Field(min_length=1)
    sources: dict[str, Source] = Field(min_length=1)
    tables: dict[str, Table] = Field(min_length=1)
    jobs: dict[str, Job] = Field(min_length=1)
    alerts: Alerts = Alerts()
    compaction: Compaction = Compaction()
