"""Start, reuse, inspect and stop the local components: the tansu broker and Azurite (Blob).

Services run detached (own session, output to a log file) and are recorded in state.json, so
`streamops local up` returns while they keep running and a later `down` finds them by pid.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamops.errors import LocalStackError
from streamops.localstack import azurite as _azurite
from streamops.localstack import broker as _broker
from streamops.localstack import process
from streamops.localstack.azurite import AzuriteEndpoint

__all__ = ["SERVICES", "AzuriteEndpoint", "LocalStack", "Service", "ServiceStatus"]

SERVICES: tuple[str, ...] = ("broker", "azurite")
HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
# Another process can take the free port between our probe and the service's bind.
_START_ATTEMPTS = 3
_FIX_UP = "Fix: run `streamops local up` (or `make run`)."


@dataclass(frozen=True)
class Service:
    """A running component: where it listens, its pid and its log file."""

    name: str
    host: str
    port: int
    pid: int
    log: Path

    @property
    def address(self) -> str:
        """host:port, e.g. "127.0.0.1:39211"."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServiceStatus:
    """Whether a component runs; address and pid only when it does, log when one was recorded."""

    name: str
    running: bool
    address: str | None
    pid: int | None
    log: Path | None


def _service(name: str, rec: dict[str, Any]) -> Service:
    return Service(name, rec["host"], rec["port"], rec["pid"], Path(rec["log"]))


def _marker(name: str) -> str:
    return _broker.MARKER if name == _broker.NAME else _azurite.MARKER


def _answers(name: str, host: str, port: int) -> bool:
    if name == _broker.NAME:
        return _broker.answers(host, port)
    return _azurite.answers(host, port)


def _port_taken(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class LocalStack:
    """The local broker and Azurite of one project, tracked in <state_dir>/state.json."""

    def __init__(self, cache_dir: Path, *, state_dir: Path | None = None):
        self.cache_dir = Path(cache_dir)
        self.state_dir = Path(state_dir) if state_dir is not None else self.cache_dir / "localstack"
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
                if process.owned(rec["pid"], _marker(name), rec["port"]):
                    process.stop(rec["pid"], name, Path(rec["log"]))
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
                result.append(ServiceStatus(name, True, svc.address, svc.pid, svc.log))
            else:
                result.append(ServiceStatus(name, False, None, None, Path(rec["log"])))
        return result

    def broker_bootstrap(self) -> str:
        """bootstrap.servers of the running local broker."""
        return self._running(_broker.NAME).address

    def azurite(self) -> AzuriteEndpoint:
        """Endpoint of the running local Azurite."""
        svc = self._running(_azurite.NAME)
        return AzuriteEndpoint(_azurite.blob_url(svc.host, svc.port))

    def _running(self, name: str) -> Service:
        rec = self._state.read().get(name)
        if rec is not None and self._healthy(name, rec):
            return _service(name, rec)
        if rec is None:
            where = f"nothing recorded in {self.state_file}"
        else:
            where = (
                f"pid {rec['pid']} on {rec['host']}:{rec['port']} is gone or does not answer; "
                f"log: {rec['log']}"
            )
        raise LocalStackError(f"the local {name} is not running ({where}). {_FIX_UP}")

    def _healthy(self, name: str, rec: dict[str, Any]) -> bool:
        return process.owned(rec["pid"], _marker(name), rec["port"]) and _answers(
            name, rec["host"], rec["port"]
        )

    def _retire(self, name: str, rec: dict[str, Any], say: Callable[[str], None]) -> None:
        # Alive but not answering means hung: stop it rather than leak a second copy.
        if process.owned(rec["pid"], _marker(name), rec["port"]):
            say(f"{name} (pid {rec['pid']}) does not answer; stopping it")
            process.stop(rec["pid"], name, Path(rec["log"]))

    def _argv(self, name: str, port: int) -> list[str]:
        if name == _broker.NAME:
            return _broker.argv(HOST, port)
        location = self.state_dir / "azurite"
        location.mkdir(parents=True, exist_ok=True)
        return _azurite.argv(self.cache_dir, HOST, port, location)

    def _start(self, name: str, say: Callable[[str], None]) -> dict[str, Any]:
        unset = _broker.UNSET_ENV if name == _broker.NAME else _azurite.UNSET_ENV
        env = {k: v for k, v in os.environ.items() if k not in unset}
        log = self.state_dir / "logs" / f"{name}.log"
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = process.free_port(HOST)
            argv = self._argv(name, port)
            say(f"starting {name} on {HOST}:{port} ...")
            t0 = time.monotonic()
            try:
                proc = process.spawn(argv, log, env)
            except OSError as exc:
                raise LocalStackError(
                    f"{name} could not be started ({argv[0]}: {exc}; log: {log}). "
                    "Fix: run `make setup`."
                ) from None
            while proc.poll() is None:
                if _answers(name, HOST, port):
                    say(f"{name} ready in {time.monotonic() - t0:.1f} s")
                    return {
                        "name": name,
                        "pid": proc.pid,
                        "host": HOST,
                        "port": port,
                        "log": str(log),
                        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                if time.monotonic() - t0 > READY_TIMEOUT_S:
                    process.stop(proc.pid, name, log)
                    raise LocalStackError(
                        f"{name} did not answer on {HOST}:{port} within {READY_TIMEOUT_S:.0f} s "
                        f"and was stopped (log: {log}). Last lines:\n{process.tail(log)}\n"
                        "Fix: read the log; on a busy machine run `streamops local up` again."
                    )
                time.sleep(0.1)
            process.pid_alive(proc.pid)  # reaps the exited child
            if attempt < _START_ATTEMPTS and _port_taken(HOST, port):
                say(f"{name} could not bind {HOST}:{port} (taken meanwhile); trying another port")
                continue
            raise LocalStackError(
                f"{name} exited with code {proc.returncode} while starting on {HOST}:{port} "
                f"(log: {log}). Last lines:\n{process.tail(log)}\n"
                "Fix: read the log; if the install is broken run `make setup`, "
                "then `streamops local up`."
            )
        raise AssertionError("unreachable: the loop returns or raises")
