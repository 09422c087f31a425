"""Fine-tune encoder-decoder (seq2seq) models: params → data → tokenize → model → train → evaluate → export.

``docs/architecture.md`` maps each step and each platform fact to its module.
"""

from job.context import apply_library_defaults

__version__ = "0.1.0"

apply_library_defaults()  # before datasets/huggingface_hub are imported by any module of the job
