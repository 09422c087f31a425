"""job.storage against a real S3 API: a moto_server process on 127.0.0.1, reached by real boto3 over HTTP.

Covers: data from a file and a prefix (split files, save_to_disk), the ETag cache and the per-node lock, a model
from S3 (manifest required), publishing with manifests and remote save_total_limit, missing bucket/key, wrong
credentials and access denied, the server going away mid-upload and a dropped connection that a retry survives,
and a whole training run with data_path=s3://… and output_uri=s3://… whose output is loaded again as model=s3://….
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import boto3
import pytest
from s3_server import CuttingProxy, MotoServer

from job import manifest, storage
from job.data import load_data
from job.errors import UserError
from job.params import Seq2SeqParams
from job.pipeline import train
from job.storage import Publisher, StorageError, download_folder, fetch, list_complete_checkpoints


def _s3(endpoint_url: str | None = None):
    return boto3.client("s3", endpoint_url=endpoint_url)


def _put_folder(bucket: str, prefix: str, folder: Path) -> None:
    client = _s3()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")


def _keys(bucket: str, prefix: str = "", *, client=None) -> list[str]:
    pages = (client or _s3()).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def _checkpoint(root: Path, step: int, *, size: int = 1000, best: int | None = None) -> Path:
    """A checkpoint folder as the Trainer and Outputs.checkpoint_saved leave it: files, then the manifest."""
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    state = {"global_step": step, "best_model_checkpoint": str(root / f"checkpoint-{best}") if best else None}
    (folder / "trainer_state.json").write_text(json.dumps(state))
    manifest.write_manifest(folder, kind="checkpoint")
    return folder


# ------------------------------------------------------------------------------------------------------ inputs
def test_data_file_is_downloaded_once_and_refetched_when_it_changes(s3_bucket, keywords_task_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="job.storage")
    client = _s3()
    client.upload_file(str(keywords_task_dir / "train.csv"), s3_bucket, "data/train.csv")
    uri, cache = f"s3://{s3_bucket}/data/train.csv", tmp_path / "cache"

    local = fetch(uri, cache_dir=cache, what="data_path")
    assert local.name == "train.csv" and local.is_relative_to(cache)
    assert local.read_bytes() == (keywords_task_dir / "train.csv").read_bytes()
    data = load_data(data_path=str(local), train_split="train[:90%]", valid_split="train[90%:]")
    assert len(data.train) == 360 and len(data.valid) == 40

    # unchanged ETag and size: the very same file is reused, not downloaded again
    inode = local.stat().st_ino
    assert fetch(uri, cache_dir=cache, what="data_path") == local
    assert local.stat().st_ino == inode
    assert "is unchanged; using the cached copy" in caplog.text

    # the object changed: downloaded again
    client.put_object(Bucket=s3_bucket, Key="data/train.csv", Body=b"text,target\nred cat,red cat\n")
    assert fetch(uri, cache_dir=cache, what="data_path").read_bytes() == b"text,target\nred cat,red cat\n"
    assert local.stat().st_ino != inode


def test_data_prefix_of_split_files_and_stale_files(s3_bucket, keywords_task_dir, tmp_path):
    _put_folder(s3_bucket, "task", keywords_task_dir)
    _s3().put_object(Bucket=s3_bucket, Key="task/", Body=b"")  # a "folder marker" some tools create
    cache = tmp_path / "cache"

    folder = fetch(f"s3://{s3_bucket}/task/", cache_dir=cache, what="data_path")
    assert sorted(p.name for p in folder.iterdir()) == ["train.csv", "validation.csv"]
    data = load_data(data_path=str(folder), valid_split="validation")
    assert (len(data.train), len(data.valid)) == (400, 40)

    # a file deleted remotely disappears from the cached copy as well
    _s3().delete_object(Bucket=s3_bucket, Key="task/validation.csv")
    assert sorted(p.name for p in fetch(f"s3://{s3_bucket}/task", cache_dir=cache, what="data_path").iterdir()) == [
        "train.csv"
    ]


def test_data_prefix_written_by_save_to_disk(s3_bucket, tmp_path):
    import datasets

    rows = {"text": [f"red cat {i}" for i in range(20)], "target": ["red cat"] * 20}
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(rows)}
    ).save_to_disk(str(saved))
    _put_folder(s3_bucket, "saved", saved)
    local = storage.localize(f"s3://{s3_bucket}/saved", cache_dir=tmp_path / "cache", what="data_path")
    data = load_data(data_path=local, valid_split="test")
    assert (len(data.train), len(data.valid)) == (20, 20)


def test_processes_of_a_node_download_once(s3_bucket, tmp_path, caplog):
    """Several processes fetch at once: they queue on the file lock and only the first one downloads."""
    caplog.set_level(logging.INFO, logger="job.storage")
    _s3().put_object(Bucket=s3_bucket, Key="big.bin", Body=os.urandom(3 * 1024 * 1024))
    uri, cache = f"s3://{s3_bucket}/big.bin", tmp_path / "cache"
    results: list[Path] = []
    workers = [
        threading.Thread(target=lambda: results.append(fetch(uri, cache_dir=cache, what="data_path"))) for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert len(results) == 4 and len(set(results)) == 1
    downloads = [r for r in caplog.records if r.getMessage().startswith(f"Downloaded {uri}")]
    assert len(downloads) == 1, caplog.text


def test_missing_bucket_and_key_are_one_line_errors_naming_the_uri(s3_bucket, tmp_path):
    cache = tmp_path / "cache"
    cases = {
        "s3://no-such-bucket-here/train.csv": "the bucket does not exist",
        f"s3://{s3_bucket}/missing.csv": "no such object or prefix",
        f"s3://{s3_bucket}/missing/": "no such object or prefix",
    }
    for uri, expected in cases.items():
        with pytest.raises(UserError) as info:
            fetch(uri, cache_dir=cache, what="data_path")
        message = str(info.value)
        assert expected in message and f"data_path {uri.rstrip('/')}" in message and "\n" not in message
    # the same mistakes are caught before training when they are the output
    with pytest.raises(UserError, match="output_uri s3://no-such-bucket-here/run: the bucket does not exist"):
        Publisher(
            "s3://no-such-bucket-here/run", local_root=tmp_path, checkpoints_dir=tmp_path, save_total_limit=1
        ).begin()


def test_wrong_credentials_and_access_denied(monkeypatch, tmp_path, caplog):
    """moto with IAM auth on: unknown key id, wrong secret and a key without permissions are all clear errors."""
    env = {
        "AWS_ACCESS_KEY_ID": "bootstrap",
        "AWS_SECRET_ACCESS_KEY": "bootstrap",
        "AWS_DEFAULT_REGION": "us-east-1",
        "INITIAL_NO_AUTH_ACTION_COUNT": "3",
    }
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with MotoServer(env=env) as server:
        iam = boto3.client("iam", endpoint_url=server.endpoint_url, **_keys_kwargs("bootstrap", "bootstrap"))
        iam.create_user(UserName="job")
        key = iam.create_access_key(UserName="job")["AccessKey"]
        _s3(server.endpoint_url).create_bucket(Bucket="secured")  # 3rd and last unauthenticated call
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint_url)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        cases = [
            ("AKIAWRONGWRONGWRONG0", "wrong-secret-canary", "credentials were rejected (InvalidAccessKeyId)"),
            (key["AccessKeyId"], "wrong-secret-canary", "credentials were rejected (SignatureDoesNotMatch)"),
            (key["AccessKeyId"], key["SecretAccessKey"], "access denied; grant the job's credentials"),
        ]
        for key_id, secret, expected in cases:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
            with pytest.raises(UserError) as info:
                fetch("s3://secured/data/train.csv", cache_dir=tmp_path, what="data_path")
            assert expected in str(info.value) and "s3://secured/data/train.csv" in str(info.value)
            assert secret not in str(info.value)
        assert "wrong-secret-canary" not in caplog.text and key["SecretAccessKey"] not in caplog.text


def test_no_credentials_and_a_dead_endpoint(s3_env, monkeypatch, tmp_path):
    from s3_server import free_port

    uri = "s3://some-bucket/train.csv"
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(UserError, match=r"data_path s3://some-bucket/train\.csv: no usable AWS credentials"):
        fetch(uri, cache_dir=tmp_path, what="data_path")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-canary")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", dead)
    with pytest.raises(StorageError) as info:  # retryable (exit code 1), not a UserError
        fetch(uri, cache_dir=tmp_path, what="data_path")
    assert f"cannot reach the storage endpoint {dead} after retries" in str(info.value)
    assert "testing-secret-canary" not in str(info.value)


def _keys_kwargs(key_id: str, secret: str) -> dict[str, str]:
    return {"aws_access_key_id": key_id, "aws_secret_access_key": secret}


def test_model_from_s3_needs_a_manifest_and_loads(s3_bucket, tiny_t5_dir, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    cache = tmp_path / "cache"
    _put_folder(s3_bucket, "plain", tiny_t5_dir)  # uploaded by hand: no manifest, so not known to be complete
    with pytest.raises(UserError, match=f"model s3://{s3_bucket}/plain has no manifest.json"):
        fetch(f"s3://{s3_bucket}/plain", cache_dir=cache, what="model")

    marked = tmp_path / "marked"
    import shutil

    shutil.copytree(tiny_t5_dir, marked)
    manifest.write_manifest(marked, kind="model")
    _put_folder(s3_bucket, "marked", marked)
    _s3().put_object(Bucket=s3_bucket, Key="marked/stray-file-not-in-manifest.txt", Body=b"x")
    local = fetch(f"s3://{s3_bucket}/marked", cache_dir=cache, what="model")
    assert manifest.verify(local, checksums=True)
    assert not (local / "stray-file-not-in-manifest.txt").exists()  # only what the manifest lists
    AutoTokenizer.from_pretrained(local)
    AutoModelForSeq2SeqLM.from_pretrained(local)

    # a manifest that lists a file the bucket lacks (a folder being rewritten) is refused
    _s3().delete_object(Bucket=s3_bucket, Key="marked/config.json")
    with pytest.raises(UserError, match=r"manifest\.json lists config\.json but the remote file is missing"):
        fetch(f"s3://{s3_bucket}/marked", cache_dir=tmp_path / "other-cache", what="model")


# ----------------------------------------------------------------------------------------------------- outputs
def test_publisher_rotates_remote_checkpoints_and_keeps_the_best(s3_bucket, tmp_path):
    root, uri = tmp_path / "run", f"s3://{s3_bucket}/runs/a"
    checkpoints = root / "checkpoints"
    publisher = Publisher(uri, local_root=root, checkpoints_dir=checkpoints, save_total_limit=2)
    publisher.begin()
    for step, best in ((10, 10), (20, 10), (30, 10), (40, 40)):
        publisher.publish_checkpoint(_checkpoint(checkpoints, step, best=best))
        if step == 30:
            publisher.wait()
            # newest two, plus checkpoint-10: the Trainer's best so far
            names = [u.rsplit("/", 1)[1] for u in list_complete_checkpoints(uri)]
            assert names == ["checkpoint-10", "checkpoint-20", "checkpoint-30"]
    publisher.wait()
    assert list_complete_checkpoints(uri) == [f"{uri}/checkpoints/checkpoint-30", f"{uri}/checkpoints/checkpoint-40"]
    assert list_complete_checkpoints(f"{uri}/checkpoints") == list_complete_checkpoints(uri)
    assert not (checkpoints / storage.STAGING).exists() or not any((checkpoints / storage.STAGING).iterdir())

    # a checkpoint round-trips through download_folder, manifest verified
    local = download_folder(f"{uri}/checkpoints/checkpoint-40", tmp_path / "restored")
    assert manifest.verify(local, checksums=True)
    assert (local / "model.safetensors").read_bytes() == (checkpoints / "checkpoint-40/model.safetensors").read_bytes()

    # the final folder: files its manifest lists, manifest last; checkpoints/ stay out of it
    (root / "metrics.json").write_text('{"status": "completed"}')
    (root / "model.safetensors").write_bytes(b"weights")
    manifest.write_manifest(root, kind="model", exclude=("checkpoints", "logs"))
    publisher.publish_final()
    assert {"runs/a/manifest.json", "runs/a/metrics.json", "runs/a/model.safetensors"} <= set(_keys(s3_bucket))
    remote_manifest = json.loads(_s3().get_object(Bucket=s3_bucket, Key="runs/a/manifest.json")["Body"].read())
    assert set(remote_manifest["files"]) == {"metrics.json", "model.safetensors"}

    # delete_folder removes a whole folder (3 objects of checkpoint-30), manifest first
    assert storage.delete_folder(f"{uri}/checkpoints/checkpoint-30") == 3
    assert list_complete_checkpoints(uri) == [f"{uri}/checkpoints/checkpoint-40"]
    assert not [key for key in _keys(s3_bucket) if "checkpoint-30" in key]


def test_publisher_without_uri_does_nothing_and_local_uri_copies(tmp_path):
    root = tmp_path / "run"
    checkpoint = _checkpoint(root / "checkpoints", 5)
    for uri in (None, str(root)):
        idle = Publisher(uri, local_root=root, checkpoints_dir=root / "checkpoints", save_total_limit=1)
        idle.begin()
        idle.publish_checkpoint(checkpoint)
        idle.wait()
        assert not idle.enabled and not (root / "checkpoints" / storage.STAGING).exists()

    mirror = tmp_path / "mirror"
    publisher = Publisher(str(mirror), local_root=root, checkpoints_dir=root / "checkpoints", save_total_limit=1)
    publisher.begin()
    publisher.publish_checkpoint(checkpoint)
    publisher.wait()
    assert manifest.verify(mirror / "checkpoints" / "checkpoint-5", checksums=True)
    assert list_complete_checkpoints(str(mirror)) == [f"{mirror}/checkpoints/checkpoint-5"]


def test_server_going_away_mid_upload_fails_clearly_and_marks_nothing_complete(s3_bucket, s3_env, tmp_path):
    proxy = CuttingProxy(s3_env.port)
    storage.configure(
        storage.StorageSettings(s3_endpoint_url=proxy.endpoint_url)
    )  # the job reaches S3 only through the proxy
    try:
        root = tmp_path / "run"
        uri = f"s3://{s3_bucket}/run"
        publisher = Publisher(uri, local_root=root, checkpoints_dir=root / "checkpoints", save_total_limit=1)
        publisher.begin()
        checkpoint = _checkpoint(root / "checkpoints", 7, size=6 * 1024 * 1024)
        proxy.cut_after(2 * 1024 * 1024)  # the server goes away while the 6 MB file is on the wire
        publisher.publish_checkpoint(checkpoint)
        with pytest.raises(StorageError) as info:
            publisher.wait()
    finally:
        proxy.close()
        storage.configure(storage.StorageSettings(s3_endpoint_url=None))
    message = str(info.value)
    assert not isinstance(info.value, UserError)  # retryable: exit code 1, not "don't retry"
    assert "checkpoint-7" in message and "\n" not in message
    assert proxy.dropped == 1
    # seen directly on the server: nothing of checkpoint-7 is marked complete
    assert f"run/checkpoints/checkpoint-7/{manifest.MANIFEST}" not in _keys(s3_bucket)
    assert list_complete_checkpoints(uri) == []
    with pytest.raises(UserError, match=r"has no manifest\.json"):
        download_folder(f"{uri}/checkpoints/checkpoint-7", tmp_path / "restore")


def test_a_dropped_connection_is_retried(s3_bucket, s3_env, tmp_path):
    proxy = CuttingProxy(s3_env.port)
    storage.configure(storage.StorageSettings(s3_endpoint_url=proxy.endpoint_url))
    try:
        root = tmp_path / "run"
        publisher = Publisher(
            f"s3://{s3_bucket}/run", local_root=root, checkpoints_dir=root / "checkpoints", save_total_limit=1
        )
        checkpoint = _checkpoint(root / "checkpoints", 3, size=3 * 1024 * 1024)
        proxy.drop_once_after(1024 * 1024)
        publisher.publish_checkpoint(checkpoint)
        publisher.wait()
    finally:
        proxy.close()
        storage.configure(storage.StorageSettings(s3_endpoint_url=None))
    assert proxy.dropped == 1
    assert list_complete_checkpoints(f"s3://{s3_bucket}/run") == [f"s3://{s3_bucket}/run/checkpoints/checkpoint-3"]
    restored = download_folder(f"s3://{s3_bucket}/run/checkpoints/checkpoint-3", tmp_path / "restored")
    assert manifest.verify(restored, checksums=True)


# ------------------------------------------------------------------------------------------------- end to end
FAST = dict(
    batch_size=16,
    lr=3e-3,
    max_seq_length=32,
    max_target_length=8,
    seed=0,
    early_stopping_patience=0,
    warmup_ratio=0.0,
)


def test_train_from_s3_data_to_s3_outputs_and_reload_as_model(
    s3_bucket, s3_env, tiny_t5_dir, keywords_task_dir, tmp_path, monkeypatch
):
    _put_folder(s3_bucket, "datasets/keywords", keywords_task_dir)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")  # the endpoint comes from the parameter this time
    out_uri = f"s3://{s3_bucket}/runs/first"
    params = Seq2SeqParams(
        data_path=f"s3://{s3_bucket}/datasets/keywords/",
        model=str(tiny_t5_dir),
        project_name=str(tmp_path / "run"),
        output_uri=out_uri,
        s3_endpoint_url=s3_env.endpoint_url,
        cache_dir=str(tmp_path / "cache"),
        valid_split="validation",
        epochs=2,
        save_total_limit=1,
        max_samples=16,
        **FAST,
    )
    metrics = train(params)
    assert metrics["status"] == "completed" and len(metrics["evaluations"]) == 2

    client = _s3(s3_env.endpoint_url)
    keys = _keys(s3_bucket, "runs/first/", client=client)
    # the final model, tokenizer, card, params and metrics, marked complete by the manifest
    remote_manifest = json.loads(client.get_object(Bucket=s3_bucket, Key="runs/first/manifest.json")["Body"].read())
    listed = set(remote_manifest["files"])
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer_config.json",
        "README.md",
        "metrics.json",
        "training_params.json",
    } <= listed
    assert {f"runs/first/{name}" for name in listed} <= set(keys)
    assert not any(name.startswith("checkpoints/") for name in listed)
    remote_metrics = json.loads(client.get_object(Bucket=s3_bucket, Key="runs/first/metrics.json")["Body"].read())
    assert remote_metrics["status"] == "completed" and len(remote_metrics["evaluations"]) == 2
    # checkpoints: each with its manifest, and the same ones the Trainer kept locally (save_total_limit=1)
    local_checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    remote_checkpoints = [u.rsplit("/", 1)[1] for u in list_complete_checkpoints(out_uri)]
    assert remote_checkpoints == local_checkpoints and 1 <= len(remote_checkpoints) <= 2  # +best if not last
    assert {k.split("/")[3] for k in keys if k.startswith("runs/first/checkpoints/")} == set(remote_checkpoints)
    assert not any(".uploading" in k for k in keys)

    # a second run starts from the first one's published output
    second = train(
        Seq2SeqParams(
            data_path=f"s3://{s3_bucket}/datasets/keywords/",
            model=out_uri,
            project_name=str(tmp_path / "second"),
            s3_endpoint_url=s3_env.endpoint_url,
            cache_dir=str(tmp_path / "cache"),
            valid_split=None,
            epochs=1,
            max_samples=16,
            save_strategy="no",
            **FAST,
        )
    )
    assert second["status"] == "completed"
    saved = json.loads((tmp_path / "second" / "training_params.json").read_text())
    assert saved["model"] == out_uri and saved["data_path"].startswith("s3://")
    card = (tmp_path / "second" / "README.md").read_text()
    assert f"Fine-tuned from `{out_uri}`" in card and "base_model:" not in card  # not a Hub id: no metadata
    assert "testing-secret-canary" not in json.dumps(saved)


def test_a_key_that_climbs_out_of_the_cache_is_refused_everywhere(s3_bucket, tmp_path):
    """A '..' in the URI's own key (not only in keys listed under a prefix): nothing lands outside cache_dir."""
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL_S3"])
    for key in ("data/../../../escape.csv", "data/train.csv", "folder/../../x/escape.csv"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=b"text,target\na,b\n")  # S3 keys may hold '..'
    cache = tmp_path / "deep" / "cache"
    for uri in (f"s3://{s3_bucket}/data/../../../escape.csv", f"s3://{s3_bucket}/folder/../../x/"):
        with pytest.raises(storage.UnsafeKey, match=r"a '\.\.' segment in the key"):
            fetch(uri, cache_dir=cache, what="data_path")
    with pytest.raises(storage.UnsafeKey, match="unsafe object name"):  # listed under a prefix
        fetch(f"s3://{s3_bucket}/", cache_dir=cache, what="data_path")
    with pytest.raises(UserError, match=r"a '\.\.' segment in the key"):
        Seq2SeqParams(data_path=f"s3://{s3_bucket}/data/../../../escape.csv")
    assert not [p for p in tmp_path.rglob("escape.csv")]
