"""bench-edit: edit a benchmark with a diffusers editor, score the edits with a VLM judge, report.

Public API: :func:`parse_score`, :class:`BenchEditConfig`, :func:`load_dataset`; the command itself is
:func:`r3d.commands.bench_edit.run_bench`.
Heavy modules (diffusers, transformers) load only when a phase needs them.
"""

from r3d.chat.client import OpenAIEndpoint
from r3d.chat.scores import parse_score, parse_score_explained
from r3d.edit.config import BenchEditConfig, EditorConfig, JudgeConfig
from r3d.edit.dataset import CATEGORIES, EditSample, load_dataset

__all__ = [
    "CATEGORIES",
    "BenchEditConfig",
    "EditSample",
    "EditorConfig",
    "JudgeConfig",
    "OpenAIEndpoint",
    "load_dataset",
    "parse_score",
    "parse_score_explained",
]
