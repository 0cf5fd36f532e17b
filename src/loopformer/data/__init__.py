"""Text for language models: corpora read as documents, tokenizers, memory-mapped tokens."""
