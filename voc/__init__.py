"""voc: answer medical multiple-choice questions with LLMs, by Verification-of-Choice."""

from voc.api import VoC
from voc.engines import Engine, SamplingParams, make_engine
from voc.types import Answer, Question, Verification

__version__ = "0.1.0"
__all__ = ["Answer", "Engine", "Question", "SamplingParams", "Verification", "VoC", "make_engine"]
