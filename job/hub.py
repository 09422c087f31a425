"""Push the finished output folder to the Hugging Face Hub as ``username/<project_name>``.

One commit holds the model (or LoRA adapter, plus ``merged/`` with --merge-adapter), the tokenizer, the model card
(README.md with the metrics), ``metrics.json`` and ``training_params.json``; checkpoints and logs stay behind.
The token is passed to ``huggingface_hub`` only: never logged, never written to a file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from job.errors import UserError
from job.params import Seq2SeqParams

log = logging.getLogger(__name__)

# Checkpoints and logs are not part of the model; manifest.json describes the local folder, not the repo.
IGNORE = ["checkpoints/**", "logs/**", "**/.uploading/**", "manifest.json", "*.tmp", "*.part", ".job-lease.json*"]


def repo_id_for(params: Seq2SeqParams) -> str:
    """``username/<last part of project_name>``, e.g. my-org/flan-t5-summarizer."""
    return f"{params.username}/{Path(params.project_name).name}"


def resolve_token(params: Seq2SeqParams) -> str | None:
    """The ``token`` param, else what huggingface_hub finds (HF_TOKEN, or the token saved by ``hf auth login``)."""
    if params.token_value():
        return params.token_value()
    from huggingface_hub import get_token

    return get_token()


def check_push(params: Seq2SeqParams) -> None:
    """Fail before training when a push could not happen: no token, or offline mode."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise UserError("push_to_hub cannot run with HF_HUB_OFFLINE=1; unset it, or drop push_to_hub")
    if not resolve_token(params):
        raise UserError(
            "push_to_hub needs a Hub token with write access: set HF_TOKEN (or the token param, "
            "e.g. SEQ2SEQ_TOKEN from a secret)"
        )


def push_outputs(params: Seq2SeqParams) -> str:
    """Push ``project_name`` to ``username/<project_name>`` (private unless hub_private=false); returns the URL."""
    check_push(params)
    return push_to_hub(
        params.output_dir,
        repo_id=repo_id_for(params),
        token=resolve_token(params) or "",
        private=params.hub_private,
        commit_message=f"seq2seq-job: fine-tuned {params.model} on {params.data_path}",
    )


def push_to_hub(
    folder: Path, *, repo_id: str, token: str, private: bool, commit_message: str, api: Any | None = None
) -> str:
    """Create (or reuse) the model repo and upload ``folder`` in one commit; returns the commit URL.

    ``api`` is an ``HfApi``-compatible client; by default ``HfApi()`` at ``HF_ENDPOINT``.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError

    client = api if api is not None else HfApi()
    started = time.monotonic()
    try:
        url = client.create_repo(repo_id, token=token, private=private, repo_type="model", exist_ok=True)
        commit = client.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            token=token,
            commit_message=commit_message,
            ignore_patterns=IGNORE,
        )
    except HFValidationError as exc:
        raise UserError(
            f"push_to_hub: '{repo_id}' is not a valid Hub repo id ({exc}); fix username/project_name"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        if status == 401:
            raise UserError(f"push_to_hub {repo_id}: the Hub rejected the token (401); set a valid HF_TOKEN") from None
        if status == 403:
            raise UserError(
                f"push_to_hub {repo_id}: the token may not write to '{repo_id.split('/')[0]}' (403); use a token "
                "with write access to that user or organisation"
            ) from None
        raise
    commit_url = str(getattr(commit, "commit_url", commit))
    log.info(
        "Pushed %s to %s (%s, %.1f s): %s",
        folder,
        url,
        "private" if private else "public",
        time.monotonic() - started,
        commit_url,
    )
    return commit_url
