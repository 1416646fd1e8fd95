"""The retrieval and answer metrics, kept importable here for the benchmark scripts; they live in evaluation."""

from evaluation.metrics import *  # noqa: F403
from evaluation.metrics import _first_occurrences  # noqa: F401
