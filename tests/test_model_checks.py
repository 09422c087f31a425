"""job.model_checks against a fake Hub on 127.0.0.1: a reachable Hub's file list is checked; an unreachable
one is said at once. (Model folders are checked through the real CLI in tests/test_bad_inputs.py.)"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from s3_server import free_port

from job.model_checks import hub_problems

REPOS = {
    "org/complete": ["config.json", "model.safetensors", "tokenizer.json", "README.md"],
    "org/no-tokenizer": ["config.json", "model.safetensors"],
    "org/tf-only": ["config.json", "tf_model.h5", "spiece.model"],
}


class _FakeHub(BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:  # the reachability probe
        self.send_response(200)
        self.end_headers()

    def do_GET(self) -> None:  # /api/models/{org}/{name}/tree/main?recursive=...
        parts = self.path.split("?")[0].split("/")
        repo = "/".join(parts[3:5]) if len(parts) > 5 and parts[1:3] == ["api", "models"] else ""
        if repo not in REPOS:
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"error": "Repository not found"}')
            return
        body = json.dumps([{"type": "file", "path": f, "size": 1, "oid": "0" * 40} for f in REPOS[repo]]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(autouse=True)
def _online(monkeypatch) -> None:
    """conftest puts every test offline; these talk to 127.0.0.1 only."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture(scope="module")
def hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


CASES = {
    # model id: the expected problem (a part of it), or None
    "org/complete": None,
    "org/no-tokenizer": "Hub model org/no-tokenizer has no tokenizer files",
    "org/tf-only": "has no PyTorch weights",
    "org/missing": "no such model on the Hub, or it is private or gated (RepositoryNotFoundError)",
}


@pytest.mark.parametrize("model", CASES)
def test_a_reachable_hub_model_is_checked_by_its_file_list(model, hub) -> None:
    problems = hub_problems(model, token=None, endpoint=hub)
    expected = CASES[model]
    assert (problems == []) if expected is None else any(expected in p for p in problems), problems


def test_an_unreachable_hub_is_said_at_once() -> None:
    started = time.monotonic()
    problems = hub_problems("org/complete", token=None, endpoint=f"http://127.0.0.1:{free_port()}")
    assert time.monotonic() - started < 10
    assert len(problems) == 1 and "cannot reach the Hub at http://127.0.0.1:" in problems[0]
    assert "HF_HUB_OFFLINE=1" in problems[0]
