"""``python -m job`` is ``seq2seq-job``."""

from job.cli import main

raise SystemExit(main())
