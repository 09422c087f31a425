"""Where the job runs and what that platform hands it, read from an environment mapping given by the caller.

One image runs unchanged on Kubernetes (Jobs, Kubeflow), Amazon SageMaker, Google Vertex AI and a workstation.
Each platform describes the same few facts its own way; these modules turn them into plain values:

* :mod:`~job.platforms.detect` — which platform, its folders (model, checkpoints, TensorBoard), SageMaker
  hyperparameters and data channels, the failure files (:class:`PlatformInfo`).
* :mod:`~job.platforms.topology` — nodes, this node's rank, master address/port (:class:`Topology`).
* :mod:`~job.platforms.overrides` — the parameters a platform implies, merged under the user's own.
* :mod:`~job.platforms.failure` — the one-line failure reason, written where the platform shows it.
* :mod:`~job.platforms.sagemaker`, :mod:`~job.platforms.vertex` — those platforms' file and path contracts.

Nothing here reads ``os.environ``: :mod:`job.context` reads the environment once and passes it in.
"""
