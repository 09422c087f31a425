"""A stand-in for Kubeflow Trainer's TrainJob status endpoint: real HTTPS on 127.0.0.1 with a CA made here.

    server = StatusServer(tmp_path, tokens={"token-1"}).start()
    server.url, server.ca_file          # what KUBEFLOW_TRAINER_SERVER_URL / _CA_CERT point at
    server.requests                     # every request received: method, path, headers, parsed JSON body
    server.stop()

Like the real one (kubeflow/trainer pkg/statusserver) it takes POST on
/apis/trainer.kubeflow.org/v1alpha1/namespaces/<ns>/trainjobs/<name>/status, answers 200 with the body it parsed,
and answers errors with a metav1.Status object: 403 for a token it does not know, ``refuse=<code>`` for every
request, 404 elsewhere. ``delay_s`` makes it slow.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NAMESPACE, TRAINJOB = "team-a", "seq2seq-train"
STATUS_PATH = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NAMESPACE}/trainjobs/{TRAINJOB}/status"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


def make_ca_and_server_cert(folder: Path) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate, server key) files; the server certificate is for 127.0.0.1."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test trainer webhook CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeflow-trainer-controller-manager")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    ca_file, cert_file, key_file = folder / "ca.crt", folder / "tls.crt", folder / "tls.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


def failure(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status, as the status server answers errors."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


class StatusServer:
    def __init__(
        self, folder: Path, *, tokens: set[str] | None = None, refuse: int | None = None, delay_s: float = 0.0
    ) -> None:
        self.ca_file, self._cert, self._key = make_ca_and_server_cert(folder / "tls")
        self.tokens = set(tokens or ())
        self.refuse = refuse
        self.delay_s = delay_s
        self.requests: list[Received] = []
        self.dropped = 0  # answers the client was no longer there for
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._httpd.server_address[1]}{STATUS_PATH}"

    def reports(self) -> list[dict[str, Any]]:
        """The trainerStatus of every accepted POST, in arrival order."""
        with self._lock:
            return [r.body["trainerStatus"] for r in self.requests if r.method == "POST" and self._accepts(r)]

    def _accepts(self, request: Received) -> bool:
        return self.refuse is None and request.headers.get("Authorization", "").removeprefix("Bearer ") in self.tokens

    def start(self) -> StatusServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                received = Received("POST", self.path, dict(self.headers.items()), body, time.monotonic())
                with server._lock:
                    server.requests.append(received)
                time.sleep(server.delay_s)
                if self.path != STATUS_PATH:
                    return self._answer(404, failure(404, "NotFound", "Not found"))
                if server.refuse is not None:
                    return self._answer(server.refuse, failure(server.refuse, "Unauthorized", "Unauthorized"))
                if not server._accepts(received):
                    return self._answer(403, failure(403, "Forbidden", "Forbidden"))
                return self._answer(200, body)

            def do_GET(self) -> None:
                received = Received("GET", self.path, dict(self.headers.items()), None, time.monotonic())
                with server._lock:
                    server.requests.append(received)
                self._answer(404, failure(404, "NotFound", "Not found"))

            def _answer(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up first (its timeout): count it, as a real server would log it
                    with server._lock:
                        server.dropped += 1

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._cert, self._key)
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
        self._httpd = httpd
        threading.Thread(target=httpd.serve_forever, name="status-server", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
