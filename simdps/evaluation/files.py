"""Atomic writes of the evaluation's text artefacts (JSON, CSV, Markdown, YAML).

An interrupted run never leaves a half-written report, so a resumed run trusts whatever it
finds. The helpers are the project's shared ones in :mod:`simdps.atomic`.
"""

from simdps.atomic import write_bytes_atomic, write_json_atomic, write_text_atomic

__all__ = ["write_text_atomic", "write_json_atomic", "write_bytes_atomic"]
