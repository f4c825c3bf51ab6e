"""Command-line tools: ``simdps-index``, ``simdps-restore``, ``simdps-train``, ``simdps-eval``."""
