"""``python -m job`` is ``seq2seq-job``."""

from job.cli import main
from job.distributed import exit_after_deepspeed, report_exit_code, shutdown_process_group

code = main()
if code == 0:
    shutdown_process_group()  # after a failure, exit at once: a dead peer could make the teardown wait
    exit_after_deepspeed()
raise SystemExit(report_exit_code(code))  # under job.launch, the launcher exits with the workers' real code
