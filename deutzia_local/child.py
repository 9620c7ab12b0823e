"""A `python -m deutzia_local ...` child process whose output is kept: how the fault suite, the end-to-end tests and
the bench run the stack and its poller as a user would, and stop or kill them; and the table they call.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A loopback port nothing listens on now, for a child stack's endpoints."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def create_keyed_table(dynamodb: Any, name: str) -> None:
    """The table the drivers' calls expect: keyed by the string `id`, billed on demand."""
    dynamodb.create_table(
        TableName=name,
        AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}],
        BillingMode="PAY_PER_REQUEST",
    )


class StackProcess:
    """One `python -m deutzia_local <arguments>` from the project's folder, its output lines kept in `lines`."""

    def __init__(self, arguments: list[str], env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(  # noqa: S603 - this project's own command, fixed arguments
            [sys.executable, "-m", "deutzia_local", *arguments],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_for_line(self, text: str, timeout: float = 60.0) -> str:
        """The first output line holding `text`; RuntimeError with the output when none comes in time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if text in line:
                    return line
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no line with {text!r}; output:\n" + "\n".join(self.lines[-50:]))

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.stop(kill=True)

    def stop(self, kill: bool = False) -> int:
        """SIGTERM (or SIGKILL), then the exit code; killed after 60 s if it does not stop."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self._reader.join(timeout=10)  # the output ends with the process
        if self.process.stdout is not None:
            self.process.stdout.close()
        return int(self.process.returncode)
