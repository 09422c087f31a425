"""Test helpers for S3: a real ``moto_server`` process on 127.0.0.1, and a TCP proxy that can cut connections.

The code under test talks to these over HTTP with real boto3 (endpoint setting), nothing is patched in-process.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """``python -m moto.server`` in its own process (S3, IAM, ... APIs in memory) on a free local port."""

    def __init__(self, *, env: dict[str, str] | None = None, log_file: Path | None = None) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._env = {**os.environ, **(env or {})}
        self._log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> MotoServer:
        output = self._log_file.open("wb") if self._log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=self._env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto_server exited with code {self.process.returncode}")
            try:
                with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not answer on {self.endpoint_url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class CuttingProxy:
    """A TCP proxy to ``target_port``. ``cut_after(n)``: once n request bytes have passed, every connection is
    dropped and new ones are refused (the server "goes away"); ``drop_once_after(n)``: only the connection that
    crosses n bytes is dropped, later ones work (a transient failure that a retry survives); ``pause()`` holds
    every request byte until ``resume()`` (an upload stalled in flight), ``hold(pattern)`` does so from the first
    request that contains ``pattern``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.sent = 0  # request bytes forwarded to the server
        self.limit: int | None = None
        self.permanent = False
        self.dropped = 0
        self.down = threading.Event()
        self.gate = threading.Event()  # cleared by pause(): request bytes wait (a stalled upload) until resume()
        self.gate.set()
        self.pattern: bytes | None = None  # hold(): the request that pauses the proxy
        self.held = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, nbytes: int) -> None:
        self.limit, self.permanent = self.sent + nbytes, True

    def drop_once_after(self, nbytes: int) -> None:
        self.limit, self.permanent = self.sent + nbytes, False

    def pause(self) -> None:
        self.gate.clear()

    def hold(self, pattern: bytes) -> None:
        """Pause once a request containing ``pattern`` (e.g. b" /bucket/key ") comes; ``held`` is set then."""
        self.pattern = pattern

    def resume(self) -> None:
        self.pattern = None
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.down.set()
        self._close_all()
        _close(self.listener)

    def _accept(self) -> None:
        while not self.down.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while data := src.recv(65536):
                if request and self.pattern is not None and self.pattern in data:
                    self.gate.clear()
                    self.held.set()
                if request:
                    self.gate.wait()
                if request and self._crosses_limit(len(data)):
                    self._trip(src, dst)
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                _close(sock)

    def _crosses_limit(self, nbytes: int) -> bool:
        """Counts request bytes; True for the one connection that crosses the limit (parallel uploads can reach it
        together, and a permanent cut then drops the others with everything else)."""
        with self._lock:
            self.sent += nbytes
            if self.down.is_set():
                return True  # after a permanent cut nothing more passes
            if self.limit is None or self.sent < self.limit:
                return False
            self.limit = None
            self.dropped += 1
            if self.permanent:
                self.down.set()
            return True

    def _trip(self, src: socket.socket, dst: socket.socket) -> None:
        if self.permanent:
            _close(self.listener)  # new connections are refused
            self._close_all()
        else:
            for sock in (src, dst):
                _close(sock)

    def _close_all(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            _close(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
