"""Model judges as annotators (issue 19): prompts from the project's guidelines and rubric, a local
causal LM, an OpenAI-compatible endpoint or a reward model as the judge, every pair judged in both
orders, verdicts stored as the external user `judge:<name>` with their raw replies and lineage, and
the judge measured against the people (`rlhf.judge.metrics`).
"""

from rlhf.judge.parse import parse_pair_reply, parse_rating_reply
from rlhf.judge.templates import JudgeTemplates, TemplateError, load_templates

__all__ = ["JudgeTemplates", "TemplateError", "load_templates", "parse_pair_reply", "parse_rating_reply"]
