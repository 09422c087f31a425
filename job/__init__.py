"""Fine-tune encoder-decoder (seq2seq) models: params → data → tokenize → model → train → evaluate → export."""

__version__ = "0.1.0"
