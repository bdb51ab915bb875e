"""Start, reuse, inspect and stop the local components: the Kafka broker and Azurite (Blob).

Services run detached (own session, output to a log file) and are recorded in state.json, so
`streamops local up` returns while they keep running and a later `down` finds them by pid.
state.json is owner-only: it holds the broker's SASL password, generated at each start.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamops.clock import WaitTimeout, poll
from streamops.errors import LocalStackError
from streamops.localstack import azurite as _azurite
from streamops.localstack import broker as _broker
from streamops.localstack import process
from streamops.localstack.azurite import AzuriteEndpoint
from streamops.localstack.broker import KafkaEndpoints

if TYPE_CHECKING:
    import subprocess

__all__ = [
    "SERVICES",
    "AzuriteEndpoint",
    "KafkaEndpoints",
    "LocalStack",
    "Service",
    "ServiceStatus",
    "local_broker",
]

SERVICES: tuple[str, ...] = ("broker", "azurite")
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
# Another process can take a free port between our probe and the service's bind.
_START_ATTEMPTS = 3
_FIX_UP = "Fix: run `streamops local up` (or `make run`)."
# Name of Azurite's one address in `addresses`.
_BLOB = "blob"


@dataclass(frozen=True)
class Service:
    """A running component: where it listens, its pid and its log file.

    host:port is the address clients use (the broker's PLAINTEXT listener); `addresses` names
    every address the service listens on (the broker: by listener name).
    """

    name: str
    host: str
    port: int
    pid: int
    log: Path
    addresses: Mapping[str, str] = field(default_factory=dict, hash=False)

    @property
    def address(self) -> str:
        """host:port, e.g. "127.0.0.1:39211"."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServiceStatus:
    """Whether a component runs; addresses and pid only when it does, log when one was recorded."""

    name: str
    running: bool
    address: str | None
    pid: int | None
    log: Path | None
    addresses: Mapping[str, str] = field(default_factory=dict, hash=False)

    def as_json(self) -> dict[str, Any]:
        """The `streamops local status --json` entry; holds no credentials."""
        return {
            "name": self.name,
            "state": "running" if self.running else "stopped",
            "addresses": dict(self.addresses),
            "pid": self.pid,
            "log": str(self.log) if self.log is not None else None,
        }


def _addresses(name: str, rec: dict[str, Any]) -> dict[str, str]:
    if name == _broker.NAME:
        listeners = rec.get("listeners")
        return {str(k): str(v) for k, v in listeners.items()} if isinstance(listeners, dict) else {}
    return {_BLOB: f"{rec['host']}:{rec['port']}"}


def _service(name: str, rec: dict[str, Any]) -> Service:
    return Service(
        name, rec["host"], rec["port"], rec["pid"], Path(rec["log"]), _addresses(name, rec)
    )


def _port_taken(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class _Launch:
    """One attempt to start a service: its command line and what to record once it answers."""

    argv: list[str]
    port: int
    ready: Callable[[], bool]
    record: dict[str, Any]
    where: str
    timeout_s: float
    bind_failed: Callable[[], str | None]


class LocalStack:
    """The local broker and Azurite of one project, tracked in <state_dir>/state.json."""

    def __init__(self, cache_dir: Path, *, state_dir: Path | None = None):
        # Absolute: the broker's command line names its config by path, and pids are matched by it.
        self.cache_dir = Path(cache_dir).absolute()
        self.state_dir = (
            Path(state_dir).absolute() if state_dir is not None else self.cache_dir / "localstack"
        )
        self._state = process.StateFile(self.state_dir / "state.json")

    @property
    def state_file(self) -> Path:
        """Path of state.json."""
        return self._state.path

    def up(
        self,
        *,
        services: tuple[str, ...] = SERVICES,
        progress: Callable[[str], None] | None = None,
    ) -> list[Service]:
        """Start the named services, reusing any that already run and answer; idempotent."""
        unknown = [s for s in services if s not in SERVICES]
        if unknown:
            raise LocalStackError(
                f"unknown local service(s) {', '.join(map(repr, unknown))}. "
                f"Fix: choose from {', '.join(SERVICES)}."
            )
        say = progress or (lambda _line: None)
        started: list[Service] = []
        with self._state.locked():
            records = self._state.read()
            for name in dict.fromkeys(services):
                rec = records.get(name)
                if rec is not None and self._healthy(name, rec):
                    svc = _service(name, rec)
                    say(f"{name} already running on {svc.address} (pid {svc.pid})")
                    started.append(svc)
                    continue
                if rec is not None:
                    self._retire(name, rec, say)
                    del records[name]
                    self._state.write(records)
                records[name] = self._start(name, say)
                self._state.write(records)
                started.append(_service(name, records[name]))
        return started

    def down(self) -> list[str]:
        """Stop every service up() recorded; returns the names of those that were running."""
        stopped: list[str] = []
        with self._state.locked():
            records = self._state.read()
            for name in list(records):
                rec = records[name]
                if self._owned(name, rec):
                    self._stop(name, rec)
                    stopped.append(name)
                # Written after each one, so a failure to stop keeps only that service recorded.
                del records[name]
                self._state.write(records)
        return stopped

    def status(self) -> list[ServiceStatus]:
        """One ServiceStatus per known service, running or not."""
        records = self._state.read()
        result = []
        for name in SERVICES:
            rec = records.get(name)
            if rec is None:
                result.append(ServiceStatus(name, False, None, None, None))
            elif self._healthy(name, rec):
                svc = _service(name, rec)
                result.append(
                    ServiceStatus(name, True, svc.address, svc.pid, svc.log, svc.addresses)
                )
            else:
                result.append(ServiceStatus(name, False, None, None, Path(rec["log"])))
        return result

    def broker_bootstrap(self) -> str:
        """bootstrap.servers (PLAINTEXT listener, host:port) of the running local broker."""
        return _service(_broker.NAME, self._running(_broker.NAME)).address

    def broker_endpoints(self) -> KafkaEndpoints:
        """Both client listeners of the running local broker and its SASL credentials."""
        ep = _broker.endpoints(self._running(_broker.NAME))
        if ep is None:  # _running() checked that the record answers, which needs endpoints
            raise AssertionError("unreachable: a healthy broker record has endpoints")
        return ep

    def azurite(self) -> AzuriteEndpoint:
        """Endpoint of the running local Azurite."""
        svc = _service(_azurite.NAME, self._running(_azurite.NAME))
        return AzuriteEndpoint(_azurite.blob_url(svc.host, svc.port))

    def _running(self, name: str) -> dict[str, Any]:
        rec = self._state.read().get(name)
        if rec is not None and self._healthy(name, rec):
            return rec
        if rec is None:
            where = f"nothing recorded in {self.state_file}"
        else:
            where = (
                f"pid {rec['pid']} on {rec['host']}:{rec['port']} is gone or does not answer; "
                f"log: {rec['log']}"
            )
        raise LocalStackError(f"the local {name} is not running ({where}). {_FIX_UP}")

    def _owned(self, name: str, rec: dict[str, Any]) -> bool:
        if name == _broker.NAME:
            # The command line names this stack's server.properties: a reused pid has another.
            return process.owned(rec["pid"], _broker.marker(self.state_dir))
        return process.owned(rec["pid"], _azurite.MARKER, rec["port"])

    def _answers(self, name: str, rec: dict[str, Any]) -> bool:
        if name == _broker.NAME:
            ep = _broker.endpoints(rec)
            return ep is not None and _broker.answers(ep)
        return _azurite.answers(rec["host"], rec["port"])

    def _healthy(self, name: str, rec: dict[str, Any]) -> bool:
        return self._owned(name, rec) and self._answers(name, rec)

    def _stop(self, name: str, rec: dict[str, Any]) -> None:
        grace = _broker.STOP_GRACE_S if name == _broker.NAME else process.STOP_GRACE_S
        process.stop(rec["pid"], name, Path(rec["log"]), grace_s=grace)

    def _retire(self, name: str, rec: dict[str, Any], say: Callable[[str], None]) -> None:
        # Alive but not answering means hung: stop it rather than leak a second copy.
        if self._owned(name, rec):
            say(f"{name} (pid {rec['pid']}) does not answer; stopping it")
            self._stop(name, rec)

    def _launch(self, name: str, log: Path) -> _Launch:
        if name == _broker.NAME:
            ports = process.free_ports(HOST, len(_broker.LISTENERS))
            addresses = {ln: f"{HOST}:{p}" for ln, p in zip(_broker.LISTENERS, ports, strict=True)}
            ep = KafkaEndpoints(
                plaintext=addresses[_broker.PLAINTEXT],
                sasl=addresses[_broker.SASL],
                sasl_mechanism=_broker.SASL_MECHANISM,
                username=_broker.USERNAME,
                password=_broker.new_password(),
            )
            argv = _broker.prepare(self.cache_dir, self.state_dir, addresses, ep.password, log)
            return _Launch(
                argv=argv,
                port=ports[0],
                ready=lambda: _broker.answers(ep),
                record={
                    "listeners": addresses,
                    "sasl": {
                        "mechanism": ep.sasl_mechanism,
                        "username": ep.username,
                        "password": ep.password,
                    },
                },
                where=", ".join(f"{a} ({ln})" for ln, a in addresses.items()),
                timeout_s=_broker.READY_TIMEOUT_S,
                bind_failed=lambda: _broker.bind_failure(log),
            )
        port = process.free_port(HOST)
        location = self.state_dir / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        return _Launch(
            argv=_azurite.argv(self.cache_dir, HOST, port, location),
            port=port,
            ready=lambda: _azurite.answers(HOST, port),
            record={},
            where=f"{HOST}:{port}",
            timeout_s=READY_TIMEOUT_S,
            bind_failed=lambda: f"{HOST}:{port}" if _port_taken(HOST, port) else None,
        )

    def _await_ready(
        self, name: str, proc: subprocess.Popen[bytes], launch: _Launch, log: Path, t0: float
    ) -> bool:
        """True once the started service answers, False if it exits first; a service still
        silent `launch.timeout_s` after `t0` is stopped and reported."""

        def answered() -> bool | None:
            if proc.poll() is not None:
                return False
            return True if launch.ready() else None

        try:
            return poll(
                answered,
                timeout_s=launch.timeout_s - (time.monotonic() - t0),
                interval_s=0.1,
                what=f"{name} on {launch.where}",
            )
        except WaitTimeout:
            self._stop(name, {"pid": proc.pid, "log": str(log)})
            raise LocalStackError(
                f"{name} did not answer on {launch.where} within "
                f"{launch.timeout_s:.0f} s and was stopped (log: {log}). Last lines:\n"
                f"{process.tail(log)}\n"
                "Fix: read the log; on a busy machine run `streamops local up` again."
            ) from None

    def _start(self, name: str, say: Callable[[str], None]) -> dict[str, Any]:
        unset = _broker.UNSET_ENV if name == _broker.NAME else _azurite.UNSET_ENV
        env = {k: v for k, v in os.environ.items() if k not in unset}
        log = self.state_dir / "logs" / f"{name}.log"
        for attempt in range(1, _START_ATTEMPTS + 1):
            t0 = time.monotonic()  # the broker's storage format counts as part of its start
            launch = self._launch(name, log)
            say(f"starting {name} on {launch.where} ...")
            try:
                proc = process.spawn(launch.argv, log, env)
            except OSError as exc:
                raise LocalStackError(
                    f"{name} could not be started ({launch.argv[0]}: {exc}; log: {log}). "
                    "Fix: run `make setup`."
                ) from None
            if self._await_ready(name, proc, launch, log, t0):
                say(f"{name} ready in {time.monotonic() - t0:.1f} s")
                return {
                    "name": name,
                    "pid": proc.pid,
                    "host": HOST,
                    "port": launch.port,
                    "log": str(log),
                    "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    **launch.record,
                }
            process.pid_alive(proc.pid)  # reaps the exited child
            taken = launch.bind_failed()
            if taken is not None and attempt < _START_ATTEMPTS:
                say(f"{name} could not bind {taken} (taken meanwhile); trying other ports")
                continue
            if taken is not None:
                raise LocalStackError(
                    f"{name} could not bind {taken}: another process took the port, "
                    f"{_START_ATTEMPTS} times in a row (log: {log}). "
                    "Fix: run `streamops local up` again; if it keeps failing, find what "
                    "opens so many loopback ports (ss -ltnp)."
                )
            raise LocalStackError(
                f"{name} exited with code {proc.returncode} while starting on {launch.where} "
                f"(log: {log}). Last lines:\n{process.tail(log)}\n"
                "Fix: read the log; if the install is broken run `make setup`, "
                "then `streamops local up`."
            )
        raise AssertionError("unreachable: the loop returns or raises")


def local_broker(cache_dir: Path, state_dir: Path | None = None) -> KafkaEndpoints:
    """The running local broker of the stack under `cache_dir` (`state_dir`: another stack's).

    The lookup a bundle resolves 'embedded' with, handed in by whoever runs Kafka clients:
    `streamops.bundle.load(path, target, local_broker=local_broker)`.
    """
    return LocalStack(cache_dir, state_dir=state_dir).broker_endpoints()
