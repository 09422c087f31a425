"""gs:// handling without Google credentials: URI parsing and validation, Vertex's /gcs/ FUSE paths as local
paths, the [gcs] extra, and how GCS errors are reported. Real GCS needs credentials (docs/storage.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from job import storage
from job.errors import UserError
from job.params import Seq2SeqParams
from job.storage import Uri, is_remote, parse_uri
from job.storage.stores import _translate


def test_uri_parsing() -> None:
    assert parse_uri("gs://my-bucket/runs/a/") == Uri("gs", "my-bucket", "runs/a/")
    assert parse_uri("s3://b.u_c-k/x.csv") == Uri("s3", "b.u_c-k", "x.csv")
    assert parse_uri("GS://bkt") == Uri("gs", "bkt", "")
    assert parse_uri("gs://bkt/runs/a").prefix == "runs/a/" and parse_uri("gs://bkt/").prefix == ""
    assert (
        str(parse_uri("gs://bkt/runs/a").child("checkpoints/checkpoint-5"))
        == "gs://bkt/runs/a/checkpoints/checkpoint-5"
    )
    for remote in ("gs://bkt/x", "s3://bkt/x", "S3://bkt/x"):
        assert is_remote(remote)
    for local in ("/gcs/bkt/data/train.csv", "data/train.csv", "google/flan-t5-base", "builtin:t5-tiny", None, ""):
        assert not is_remote(local)
    with pytest.raises(UserError, match="data_path=gs:///x: '' is not a bucket name"):
        parse_uri("gs:///x", what="data_path")


def test_vertex_gcs_fuse_paths_are_local(tmp_path) -> None:
    """/gcs/bucket/... is a mounted folder: returned as is, never downloaded, no client needed."""
    local = storage.fetch("/gcs/my-bucket/data/train.csv", cache_dir=tmp_path, what="data_path")
    assert local == Path("/gcs/my-bucket/data/train.csv")
    assert storage.localize("/gcs/my-bucket/model", cache_dir=None, what="model") == "/gcs/my-bucket/model"
    assert storage.localize("google/flan-t5-base", cache_dir=None, what="model") == "google/flan-t5-base"
    assert list(tmp_path.iterdir()) == []
    params = Seq2SeqParams(data_path="/gcs/bkt/data", model="/gcs/bkt/model", output_uri="/gcs/bkt/runs/a")
    assert params.output_uri == "/gcs/bkt/runs/a"


def test_params_reject_bad_uris_at_once() -> None:
    with pytest.raises(UserError) as info:
        Seq2SeqParams(
            data_path="ftp://host/x.csv", model="s3://", output_uri="hf://datasets/x", s3_endpoint_url="minio:9000"
        )
    message = str(info.value)
    assert "data_path=ftp://host/x.csv: unsupported scheme ftp://" in message
    assert "model=s3://: '' is not a bucket name" in message
    assert "output_uri=hf://datasets/x: unsupported scheme" in message
    assert "s3_endpoint_url=minio:9000 must start with http:// or https://" in message


def test_gs_without_the_extra_names_the_install_command(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # as if google-cloud-storage were absent
    with pytest.raises(
        UserError, match=r"output_uri=gs://bkt/run needs google-cloud-storage: pip install 'seq2seq-job\[gcs\]'"
    ):
        Seq2SeqParams(data_path="x.csv", output_uri="gs://bkt/run")


def test_gcs_errors_become_one_line_messages() -> None:
    exceptions = pytest.importorskip("google.api_core.exceptions", reason="the [gcs] extra is not installed")
    auth = pytest.importorskip("google.auth.exceptions")
    cases = [
        (exceptions.NotFound("bucket gone"), UserError, "bucket or object not found"),
        (exceptions.Forbidden("no"), UserError, "access denied"),
        (
            auth.DefaultCredentialsError("none found"),
            UserError,
            "no Google credentials; set GOOGLE_APPLICATION_CREDENTIALS",
        ),
        (exceptions.ServiceUnavailable("503"), storage.StorageError, "GCS request failed after retries"),
    ]
    for exc, kind, text in cases:
        mapped = _translate(exc, uri="gs://bkt/x", what="data_path", endpoint="https://storage.googleapis.com")
        assert isinstance(mapped, kind) and text in str(mapped) and "data_path gs://bkt/x" in str(mapped)


def test_gcs_without_credentials_is_a_user_error(monkeypatch, tmp_path) -> None:
    pytest.importorskip("google.cloud.storage", reason="the [gcs] extra is not installed")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))  # no `gcloud auth application-default login`
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # not on Google Cloud: don't probe the metadata server
    with pytest.raises(UserError, match=r"data_path gs://bkt/train\.csv: no Google credentials"):
        storage.fetch("gs://bkt/train.csv", cache_dir=tmp_path, what="data_path")
