"""``python -m job`` is ``seq2seq-job`` (job.cli), which ends in the one exit path (job.exits)."""

from job.cli import main

raise SystemExit(main())
