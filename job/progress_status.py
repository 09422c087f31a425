"""Live progress of a Kubeflow Trainer v2 TrainJob: percent done, ETA and the latest metrics in its status.

With the ``TrainJobStatus`` feature gate on (Trainer >= 2.2), Trainer gives every trainer container

    KUBEFLOW_TRAINER_SERVER_URL      https://<controller>:<port>/apis/trainer.kubeflow.org/v1alpha1/namespaces/<ns>/
                                     trainjobs/<name>/status
    KUBEFLOW_TRAINER_SERVER_CA_CERT  a CA file: the one that signed the endpoint's certificate
    KUBEFLOW_TRAINER_SERVER_TOKEN    a file holding a projected service-account token (it rotates: read it each time)

and takes ``POST {"trainerStatus": {...}}`` with ``Authorization: Bearer <token>`` into the TrainJob's
``status.trainerStatus``: ``progressPercentage`` (integer 0-100), ``estimatedRemainingSeconds`` (integer >= 0),
``metrics`` (at most 256 ``{"name", "value"}``, both strings of 1-64 characters) and ``lastUpdatedTime`` (RFC 3339,
required). See kubeflow/trainer ``pkg/statusserver`` and KEP-2779.

:class:`TrainJobProgress` is the ``TrainerCallback`` that reports, on the main process only: at the start, at
logging steps (at most once every ``min_interval_s``), at the end of training (100 % once every step has run) and,
through :meth:`TrainJobProgress.finish`, once more with the final metrics. The metrics are the step, the epoch,
the latest training loss and every evaluation metric. A POST runs on a background thread with short timeouts, so
training never waits for the endpoint; a failed report is a warning the first time and a debug line afterwards,
never an error. Without the three values nothing is reported (:meth:`StatusEndpoint.from_env` gives None).

transformers >= 4.57 registers its own ``KubeflowCallback`` whenever ``KUBEFLOW_TRAINER_SERVER_URL`` is set, even
with an explicit ``report_to``; it posts on the training thread (up to 5 s per attempt when the endpoint hangs)
and caches the token. :func:`remove_builtin_kubeflow_callback` takes it off a Trainer so only this one reports.

Importing this module does not import transformers (seconds): :class:`TrainJobProgress` is made on first use.
"""

from __future__ import annotations

import json
import logging
import math
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.lazy_callbacks import lazy_callback

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState, TrainingArguments

log = logging.getLogger(__name__)

URL_ENV = "KUBEFLOW_TRAINER_SERVER_URL"
CA_CERT_ENV = "KUBEFLOW_TRAINER_SERVER_CA_CERT"
TOKEN_ENV = "KUBEFLOW_TRAINER_SERVER_TOKEN"
MAX_METRICS = 256  # TrainerStatus.metrics: +kubebuilder:validation:MaxItems=256
MAX_TEXT = 64  # Metric.name and Metric.value: MaxLength=64
MAX_INT32 = 2**31 - 1  # progressPercentage and estimatedRemainingSeconds are int32
# Logged values that are throughput or timing, not model metrics: not reported.
_NOT_METRICS = ("_runtime", "_per_second", "_flos")


@dataclass(frozen=True)
class StatusEndpoint:
    """Where and how to report: the status URL, the CA file that verifies it, the token file."""

    url: str
    ca_file: Path
    token_file: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> StatusEndpoint | None:
        """The endpoint Trainer injected, or None when the job is not a TrainJob with progress reporting."""
        values = {name: (env.get(name) or "").strip() for name in (URL_ENV, CA_CERT_ENV, TOKEN_ENV)}
        if not any(values.values()):
            return None
        missing = [name for name, value in values.items() if not value]
        if missing:
            log.warning("TrainJob progress is not reported: %s set but %s missing", URL_ENV, ", ".join(missing))
            return None
        if not values[URL_ENV].startswith("https://"):
            log.warning("TrainJob progress is not reported: %s=%s is not an https:// URL", URL_ENV, values[URL_ENV])
            return None
        return cls(url=values[URL_ENV], ca_file=Path(values[CA_CERT_ENV]), token_file=Path(values[TOKEN_ENV]))


# ------------------------------------------------------------------------------------------------- payload
def trainer_status(
    *, progress: float | None, eta_s: float | None, metrics: Mapping[str, Any], now: datetime | None = None
) -> dict[str, Any]:
    """The request body: ``{"trainerStatus": {...}}`` within the CRD's limits (see the module doc)."""
    status: dict[str, Any] = {}
    if progress is not None and math.isfinite(progress):
        status["progressPercentage"] = max(0, min(100, int(progress)))
    if eta_s is not None and math.isfinite(eta_s):
        status["estimatedRemainingSeconds"] = max(0, min(MAX_INT32, round(eta_s)))
    entries = []
    for name, value in metrics.items():
        text = metric_text(value)
        if text is not None and 0 < len(str(name)) <= MAX_TEXT:
            entries.append({"name": str(name), "value": text})
    if entries:
        status["metrics"] = entries[:MAX_METRICS]
    status["lastUpdatedTime"] = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"trainerStatus": status}


def metric_text(value: Any) -> str | None:
    """A metric value as the string TrainJob status holds (None for what is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    text = str(value) if isinstance(value, int) else f"{value:.6g}"
    return text[:MAX_TEXT]


# ------------------------------------------------------------------------------------------------- sending
class StatusReporter:
    """Posts status reports from a background thread; a newer report replaces one still waiting to be sent."""

    def __init__(self, endpoint: StatusEndpoint, *, timeout_s: float = 5.0) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self.sent = 0
        self.failed = 0
        self._cond = threading.Condition()
        self._pending: dict[str, Any] | None = None
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None

    def submit(self, body: dict[str, Any]) -> None:
        """Queue ``body`` for sending and return at once."""
        with self._cond:
            if self._closed:
                return
            self._pending = body
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="trainjob-progress", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued report has been sent (or has failed); False if ``timeout_s`` ran out first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float) -> None:
        """Send what is queued (waiting at most ``timeout_s``), then stop the thread."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def post(self, body: dict[str, Any]) -> bool:
        """One POST, with the token as it is in its file now; True when the endpoint took it."""
        try:
            token = self.endpoint.token_file.read_text(encoding="utf-8").strip()
            if not token:
                raise ValueError(f"the token file {self.endpoint.token_file} is empty")
            context = ssl.create_default_context(cafile=str(self.endpoint.ca_file))  # re-read: the CA rotates too
            # An in-cluster Service: never through an HTTP(S)_PROXY the pod may have for the internet.
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )
            request = urllib.request.Request(
                self.endpoint.url,
                data=json.dumps(body).encode("utf-8"),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                method="POST",
            )
            with opener.open(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            self._failure(f"HTTP {exc.code} {_status_message(exc)}")
            return False
        except Exception as exc:  # reporting is best effort: nothing here may reach the training loop
            self._failure(f"{type(exc).__name__}: {exc}")
            return False
        self.sent += 1
        return True

    def _failure(self, reason: str) -> None:
        self.failed += 1
        if self.failed == 1:
            log.warning(
                "TrainJob progress report to %s failed (%s); training goes on, and later failures are "
                "logged at debug level only",
                self.endpoint.url,
                reason,
            )
        else:
            log.debug("TrainJob progress report failed again (%d failures): %s", self.failed, reason)

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closed:
                    self._cond.wait()
                if self._pending is None:
                    return
                body, self._pending, self._busy = self._pending, None, True
            try:
                self.post(body)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()


def _status_message(exc: urllib.error.HTTPError) -> str:
    """The message of the metav1.Status the endpoint answers errors with, else the HTTP reason."""
    try:
        return str(json.loads(exc.read(4096) or b"{}").get("message") or exc.reason)
    except (OSError, ValueError, AttributeError):
        return str(exc.reason)


# ------------------------------------------------------------------------------------------------- callback
class _TrainJobProgress:
    """Reports progress, ETA and metrics to a TrainJob's status (see the module doc); main process only.

    ``TrainJobProgress`` is this class with transformers' ``TrainerCallback`` as a second base.
    """

    def __init__(self, endpoint: StatusEndpoint, *, min_interval_s: float = 10.0, timeout_s: float = 5.0) -> None:
        self.reporter = StatusReporter(endpoint, timeout_s=timeout_s)
        self.min_interval_s = min_interval_s
        self.metrics: dict[str, Any] = {}
        self._started = 0.0
        self._start_step = 0
        self._last_sent: float | None = None
        self._state: TrainerState | None = None

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._state = state
        self._started = time.monotonic()
        self._start_step = state.global_step  # a resumed run: the ETA counts only this process's steps
        self._report(state)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        self._state = state
        self.metrics.update(_reported(kwargs.get("logs") or {}))
        if self._last_sent is None or time.monotonic() - self._last_sent >= self.min_interval_s:
            self._report(state)

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any) -> None:
        if state.is_world_process_zero:
            self._report(state)  # 100 % when every step ran; a run stopped by SIGTERM says how far it got

    def finish(self, metrics: Mapping[str, Any] | None = None, *, timeout_s: float = 10.0) -> None:
        """The job is done: report 100 % with ``metrics`` (e.g. the final evaluation) and wait for it to be sent."""
        if self._state is None:  # not the main process, or training never started
            return
        self.metrics.update(_reported(metrics or {}))
        self.reporter.submit(trainer_status(progress=100, eta_s=0, metrics=self._with_step(self._state)))
        self.reporter.close(timeout_s)

    def _report(self, state: TrainerState) -> None:
        self._last_sent = time.monotonic()
        progress = eta = None
        if state.max_steps and state.max_steps > 0:
            progress = 100 * state.global_step / state.max_steps
            done = state.global_step - self._start_step
            if done > 0:
                eta = (time.monotonic() - self._started) / done * max(0, state.max_steps - state.global_step)
        self.reporter.submit(trainer_status(progress=progress, eta_s=eta, metrics=self._with_step(state)))

    def _with_step(self, state: TrainerState) -> dict[str, Any]:
        evaluation = sorted(k for k in self.metrics if k.startswith("eval_"))
        ordered = {k: self.metrics[k] for k in ("epoch", "loss", "train_loss", *evaluation) if k in self.metrics}
        return {"step": state.global_step, **ordered}


def _reported(logs: Mapping[str, Any]) -> dict[str, Any]:
    """The logged values worth showing in the TrainJob: epoch, losses and evaluation metrics."""
    return {
        k: v
        for k, v in logs.items()
        if (k in ("epoch", "loss", "train_loss") or k.startswith("eval_"))
        and not k.endswith(_NOT_METRICS)
        and metric_text(v) is not None
    }


def progress_callback(
    env: Mapping[str, str], *, min_interval_s: float = 10.0, timeout_s: float = 5.0
) -> _TrainJobProgress | None:
    """The callback for this run, or None when the environment has no TrainJob status endpoint."""
    endpoint = StatusEndpoint.from_env(env)
    if endpoint is None:
        return None
    log.info("TrainJob progress goes to %s (at most every %.0f s)", endpoint.url, min_interval_s)
    return __getattr__("TrainJobProgress")(endpoint, min_interval_s=min_interval_s, timeout_s=timeout_s)


def __getattr__(name: str) -> Any:
    """``TrainJobProgress``: made on first use, so that importing this module does not import transformers."""
    return lazy_callback(globals(), name, "TrainJobProgress", _TrainJobProgress)


def remove_builtin_kubeflow_callback(trainer: Any) -> bool:
    """Take transformers' own KubeflowCallback off ``trainer`` (see the module doc); True if it was there."""
    found = [cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "KubeflowCallback"]
    for callback in found:
        trainer.remove_callback(callback)
    return bool(found)
