"""Evaluation harness (``simdps-eval``): cut excerpts with a central gap, restore them with
every method, score each restoration against the original, and report.

Modules, one idea each: :mod:`~simdps.evaluation.metrics` (objective gap metrics),
:mod:`~simdps.evaluation.notes` (note-level score, optional basic-pitch + mir_eval),
:mod:`~simdps.evaluation.excerpts` (seeded excerpt selection),
:mod:`~simdps.evaluation.restoration` (one excerpt by one method), :mod:`~simdps.evaluation.report`
(CSV, Markdown summary, box plots), :mod:`~simdps.evaluation.mushra` (webMUSHRA export),
and :mod:`~simdps.evaluation.runner`
(the resumable loop tying them together: ``run_evaluation(recordings_dir, out_dir, EvalConfig(...))``).
"""
