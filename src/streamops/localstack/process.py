"""Detached service processes: spawn, liveness by pid, stop, free ports, the state file."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from streamops.clock import WaitTimeout, poll
from streamops.errors import LocalStackError

# Children this Python process started, so stop() can reap them: a killed child stays a zombie
# (and looks alive to kill(pid, 0)) until its parent waits for it.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

STOP_GRACE_S = 10.0
# A service may colour its log lines even when writing to a file; error messages stay plain.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Java stack frames ("\tat ...", "\t... 6 more", "Caused by: ...") bury the message in a tail.
_STACK_FRAME = re.compile(r"^\s+(at |\.\.\. \d+ more)|^Caused by: ")
_KILL_WAIT_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(host: str, count: int) -> list[int]:
    """`count` distinct TCP ports on `host` that nothing listens on right now."""
    with contextlib.ExitStack() as held:
        ports = []
        for _ in range(count):
            # Keep each socket bound until all are chosen, so no port is handed out twice.
            s = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind((host, 0))
            ports.append(s.getsockname()[1])
        return ports


def spawn(argv: Sequence[str], log: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, output to `log`, so it outlives the caller."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            # A new session keeps Ctrl-C in the caller's terminal from reaching the service.
            start_new_session=True,
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not count)."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The command name in parentheses may hold spaces; the state follows the last ')'.
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line of `pid` joined by spaces, or "" when it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def owned(pid: int, marker: str, port: int | None = None) -> bool:
    """Whether `pid` is alive and still the service we started (guards against pid reuse).

    Its command line must hold `marker` (and `port`, when given).
    """
    line = cmdline(pid)
    return pid_alive(pid) and marker in line and (port is None or str(port) in line)


def _wait_gone(pid: int, seconds: float) -> bool:
    """Whether `pid` exits within `seconds`."""
    try:
        return poll(
            lambda: True if not pid_alive(pid) else None,
            timeout_s=seconds,
            interval_s=0.05,
            what=f"process {pid} to exit",
        )
    except WaitTimeout:
        return not pid_alive(pid)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        # The service leads its own session; signalling the group also stops any helpers it forked.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop(pid: int, name: str, log: Path | None, *, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM `pid`, wait up to `grace_s`, then SIGKILL; LocalStackError if it survives."""
    _signal(pid, signal.SIGTERM)
    if _wait_gone(pid, grace_s):
        return
    _signal(pid, signal.SIGKILL)
    if not _wait_gone(pid, _KILL_WAIT_S):
        raise LocalStackError(
            f"{name} (pid {pid}) did not stop after SIGTERM and SIGKILL (log: {log}). "
            f"Fix: check `ps -p {pid}` and stop it by hand (kill -9 {pid})."
        )


def tail(log: Path, lines: int = 20) -> str:
    """The last `lines` lines of `log` without stack frames, indented, for error messages."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return "    (no log written)"
    kept = [ln for ln in _ANSI.sub("", text).rstrip().splitlines() if not _STACK_FRAME.match(ln)]
    last = kept[-lines:]
    return "\n".join(f"    {line}" for line in last) if last else "    (log is empty)"


def last_message(text: str) -> str:
    """The last line of `text` that is not a stack frame, for one-line error messages."""
    kept = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
    kept = [ln for ln in kept if not _STACK_FRAME.match(ln) and not ln.startswith("at ")]
    return kept[-1] if kept else "(no output)"


class StateFile:
    """state.json: one record per started service, written atomically, guarded by a file lock."""

    def __init__(self, path: Path):
        self.path = path

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock so two `local up`/`down` runs do not interleave."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(".lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> dict[str, dict[str, Any]]:
        """The recorded services by name; {} when none or the file is unreadable."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        services = data.get("services") if isinstance(data, dict) else None
        if not isinstance(services, dict):
            return {}
        return {k: v for k, v in services.items() if _valid_record(v)}

    def write(self, services: dict[str, dict[str, Any]]) -> None:
        """Replace the file's content in one step, so a reader never sees half a file.

        Owner-only (0600): the records hold the broker's SASL password.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"services": services}, indent=2, sort_keys=True) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


def _valid_record(rec: object) -> bool:
    # A hand-edited or older file must not crash `status`; such records count as not running.
    return (
        isinstance(rec, dict)
        and isinstance(rec.get("pid"), int)
        and isinstance(rec.get("port"), int)
        and isinstance(rec.get("host"), str)
        and isinstance(rec.get("log"), str)
    )
