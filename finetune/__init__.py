"""Three-stage fine-tuning (knowledge -> instruction -> task) of a general LLM into a medical one that `voc` serves.

    voc finetune CONFIG.yaml [--stage N] [--resume]      (or: python -m finetune CONFIG.yaml)

See finetune/config.py for the YAML format and finetune/configs/ for examples. Every data source is checked by content
against the test splits (finetune/leakage.py): a leak raises finetune.leakage.TestSplitError, or with `leakage: filter`
is dropped and counted in the stage's run.json.
"""

from finetune.config import ConfigError, FinetuneConfig, load_config, parse_config

__all__ = ["ConfigError", "FinetuneConfig", "load_config", "parse_config"]
