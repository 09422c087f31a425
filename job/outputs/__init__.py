"""Everything the job writes into ``project_name``: file names, the metrics report, the model card, the folder.

* :mod:`~job.outputs.files` — the name of every file and folder (one home, used by resume and storage too).
* :mod:`~job.outputs.report` — the typed report that *is* ``metrics.json``, built by one function.
* :mod:`~job.outputs.card` — the model card (``README.md``).
* :mod:`~job.outputs.folder` — :class:`Outputs`, through which every write goes (and uploads hook in).
"""
