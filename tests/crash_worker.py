"""Fault injection for the build's crash isolation (tests/test_index_build.py): a ``process_file``
whose process dies, as from a decoder's segmentation fault, on files whose name starts with
``crash``, or on every file when ``SIMDPS_TEST_CRASH_ALL`` is set. Importable by the build's
spawned worker processes, which inherit the tests' ``sys.path``."""

from __future__ import annotations

import os
import signal

from simdps.indexer.work import process_file


def process_file_or_crash(task, cfg):
    if os.environ.get("SIMDPS_TEST_CRASH_ALL") or os.path.basename(task.rel_path).startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return process_file(task, cfg)
