"""Fine-tune encoder-decoder (seq2seq) models: params → data → tokenize → model → train → evaluate → export."""

import os

__version__ = "0.1.0"

# Air-gapped clusters: no telemetry, and datasets must not ping the Hub to count loads of local files
# (an unreachable DNS lookup stalls each load by seconds). Users can still override both.
os.environ.setdefault("HF_UPDATE_DOWNLOAD_COUNTS", "0")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
