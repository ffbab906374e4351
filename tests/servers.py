"""Real `invoicetrail serve` processes for tests that need true concurrency.

A server runs as `sys.executable -m invoicetrail serve` on a free loopback port, in its own
process group (so `--workers N` children go with it), its output captured in a log file that
is shown when it fails to come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

HOST = "127.0.0.1"
# SPEC: `serve` answers /healthz within 30 s of start.
STARTUP_SECONDS_MAX = 30.0
STOP_SECONDS_MAX = 15.0
LOG_TAIL_CHARS = 4000


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        """SIGTERM to the server's process group (the `--workers N` children are in it);
        SIGKILL to the group if the server is not gone in time."""
        if self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=STOP_SECONDS_MAX)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=STOP_SECONDS_MAX)


def start_server(
    database_url: str,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> Server:
    """Starts `invoicetrail serve` and returns once `/healthz` answers 200."""
    port = free_port()
    log_fd, log_name = tempfile.mkstemp(
        prefix=f"invoicetrail-serve-{port}-", suffix=".log", dir=log_dir
    )
    child_env = {
        **os.environ,
        "INVOICETRAIL_DATABASE_URL": database_url,
        "INVOICETRAIL_RATE_LIMIT_PER_SECOND": "0",
        **(env or {}),
    }
    with os.fdopen(log_fd, "wb") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "invoicetrail",
                "serve",
                "--host",
                HOST,
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(base_url=f"http://{HOST}:{port}", process=process, log_path=Path(log_name))
    try:
        _wait_healthy(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_healthy(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    with httpx.Client(base_url=server.base_url, timeout=2.0) as probe:
        while True:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"invoicetrail serve exited with {server.process.returncode}:\n"
                    f"{server.log_tail()}"
                )
            try:
                if probe.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"invoicetrail serve did not answer /healthz within "
                    f"{STARTUP_SECONDS_MAX:.0f} s:\n{server.log_tail()}"
                )
            time.sleep(0.1)


@contextmanager
def running_server(
    database_url: str,
    *,
    workers: int = 1,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[Server]:
    server = start_server(database_url, workers=workers, env=env, log_dir=log_dir)
    try:
        yield server
    finally:
        server.stop()
