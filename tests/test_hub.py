"""push_to_hub through real huggingface_hub HTTP calls to a local test double of the Hub API on 127.0.0.1.

The double answers the calls ``HfApi.create_repo`` and ``HfApi.upload_folder`` make (repos/create, validate-yaml,
preupload, commit) and records them, so the test sees exactly what a real Hub would have been asked to create and
store: repo id, privacy, every file with its content, and the token only in the Authorization header.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from job import hub
from job.errors import UserError
from job.params import Seq2SeqParams
from job.pipeline import train

TOKEN = "hf_TEST_TOKEN_CANARY_123456"


class HubDouble:
    """A tiny Hub: records created repos and committed files; answers 401 to any other token."""

    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.repos: dict[str, dict[str, Any]] = {}  # repo_id -> {"private": bool, "files": {path: bytes}}
        self.commits: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                double.requests.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
                self._reply(404, {"error": "not in the double"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                double.requests.append(("POST", self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.headers.get("Authorization") != f"Bearer {double.token}":
                    self._reply(401, {"error": "Invalid credentials in Authorization header"})
                    return
                status, payload = double.answer(self.path, body)
                self._reply(status, payload)

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def answer(self, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        path = path.split("?", 1)[0]
        if path == "/api/repos/create":
            request = json.loads(body)
            repo_id = f"{request['organization']}/{request['name']}"
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.endpoint}/{repo_id}"}
            self.repos[repo_id] = {"private": request.get("visibility") == "private", "files": {}, "request": request}
            return 200, {"url": f"{self.endpoint}/{repo_id}"}
        if path == "/api/validate-yaml":
            return 200, {"warnings": []}
        parts = path.strip("/").split("/")  # api/models/{ns}/{name}/{preupload|commit}/{revision}
        if len(parts) == 6 and parts[:2] == ["api", "models"]:
            repo_id = f"{parts[2]}/{parts[3]}"
            if repo_id not in self.repos:
                return 404, {"error": "Repository not found"}
            if parts[4] == "preupload":
                files = json.loads(body)["files"]
                return 200, {
                    "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                }
            if parts[4] == "commit":
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                files = {
                    v["value"]["path"]: base64.b64decode(v["value"]["content"]) for v in lines if v["key"] == "file"
                }
                self.repos[repo_id]["files"].update(files)
                self.commits.append({"repo_id": repo_id, "header": lines[0]["value"], "files": sorted(files)})
                oid = f"{len(self.commits):040x}"
                return 200, {
                    "commitUrl": f"{self.endpoint}/{repo_id}/commit/{oid}",
                    "commitOid": oid,
                    "pullRequestUrl": None,
                }
        return 404, {"error": f"{path} is not in the double"}


@pytest.fixture
def hub_double(monkeypatch: pytest.MonkeyPatch):
    """The Hub double, with huggingface_hub pointed at it (HF_ENDPOINT) and online for this test."""
    from huggingface_hub import constants

    double = HubDouble()
    monkeypatch.setattr(constants, "ENDPOINT", double.endpoint)  # what HF_ENDPOINT sets at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield double
    double.close()


def _output_folder(root: Path) -> Path:
    """A finished output folder as Outputs.finish leaves it, plus checkpoints and logs that must stay behind."""
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x00weights")
    (root / "config.json").write_text('{"model_type": "t5"}')
    (root / "README.md").write_text("---\nlibrary_name: transformers\n---\n\n# run\n\n| rouge1 | 88.8 |\n")
    (root / "metrics.json").write_text('{"eval_rouge1": 88.8}')
    (root / "manifest.json").write_text('{"complete": true, "files": {}}')
    (root / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (root / "checkpoints" / "checkpoint-5" / "optimizer.pt").write_bytes(b"big")
    (root / "logs").mkdir()
    (root / "logs" / "events.out").write_bytes(b"tb")
    return root


@pytest.mark.parametrize("private", [True, False])
def test_push_creates_the_repo_and_uploads_the_model_card_and_files(hub_double, tmp_path, caplog, private) -> None:
    caplog.set_level(logging.DEBUG)
    folder = _output_folder(tmp_path / "run")
    url = hub.push_to_hub(folder, repo_id="alice/run", token=TOKEN, private=private, commit_message="fine-tuned")
    assert url.startswith(f"{hub_double.endpoint}/alice/run/commit/")
    assert list(hub_double.repos) == ["alice/run"] and hub_double.repos["alice/run"]["private"] is private
    files = hub_double.repos["alice/run"]["files"]
    assert sorted(files) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    assert files["model.safetensors"] == b"\x00weights" and b"rouge1" in files["README.md"]
    assert hub_double.commits[0]["header"]["summary"] == "fine-tuned"

    # pushing again reuses the repo (create answers 409, exist_ok) and commits again
    hub.push_to_hub(folder, repo_id="alice/run", token=TOKEN, private=private, commit_message="again")
    assert len(hub_double.commits) == 2
    # the token went to the Hub's API calls in the Authorization header only (huggingface_hub may also send an
    # anonymous GET of its own, e.g. /api/agent-harnesses)
    api_calls = [headers for method, _, headers in hub_double.requests if method == "POST"]
    assert len(api_calls) == 8 and all(h.get("authorization") == f"Bearer {TOKEN}" for h in api_calls)
    assert TOKEN not in caplog.text


def test_push_errors_are_one_line_user_errors(hub_double, tmp_path) -> None:
    folder = _output_folder(tmp_path / "run")
    with pytest.raises(UserError, match="alice/run: the Hub rejected the token"):
        hub.push_to_hub(folder, repo_id="alice/run", token="hf_wrong", private=True, commit_message="x")
    with pytest.raises(UserError, match="is not a valid Hub repo id"):
        hub.push_to_hub(folder, repo_id="alice/bad name!", token=TOKEN, private=True, commit_message="x")


def test_push_needs_a_token_and_the_network(monkeypatch, tmp_path) -> None:
    from huggingface_hub import constants

    params = Seq2SeqParams(data_path="x.csv", push_to_hub=True, username="alice")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="HF_HUB_OFFLINE=1"):
        hub.check_push(params)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(UserError, match="push_to_hub needs a Hub token"):
        hub.check_push(params)
    monkeypatch.setenv("HF_TOKEN", TOKEN)  # HF_TOKEN is enough; so is the token param
    hub.check_push(params)
    assert hub.resolve_token(Seq2SeqParams(data_path="x.csv", token="hf_param")) == "hf_param"


def test_train_pushes_the_final_model_card_and_metrics(hub_double, tiny_t5_dir, keywords_task_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "keywords-t5"
    metrics = train(
        Seq2SeqParams(
            data_path=str(keywords_task_dir),
            model=str(tiny_t5_dir),
            project_name=str(out),
            push_to_hub=True,
            username="alice",
            token=TOKEN,
            valid_split="validation",
            max_samples=8,
            epochs=1,
            batch_size=8,
            max_seq_length=32,
            max_target_length=8,
            early_stopping_patience=0,
        )
    )
    assert metrics["status"] == "completed"
    repo = hub_double.repos["alice/keywords-t5"]
    assert repo["private"] is True  # private unless hub_private=false
    files = repo["files"]
    assert {
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer_config.json",
        "README.md",
        "metrics.json",
        "training_params.json",
    } <= set(files)
    assert not any(name.startswith(("checkpoints/", "logs/")) or name == "manifest.json" for name in files)
    card = files["README.md"].decode()
    assert "rouge1" in card and 'from_pretrained("alice/keywords-t5")' in card  # the snippet loads the pushed repo
    assert "base_model:" not in card  # a local folder is no Hub id: the Hub would reject it as metadata
    assert json.loads(files["metrics.json"])["status"] == "completed"
    assert json.loads(files["training_params.json"])["token"] == "***"
    # the token reached the Hub's Authorization header, and no file or log line
    assert all(TOKEN.encode() not in content for content in files.values())
    assert all(TOKEN.encode() not in p.read_bytes() for p in out.rglob("*") if p.is_file())
    assert TOKEN not in caplog.text
