"""The fine-tuning run, as one YAML file validated by pydantic.

A run turns a base model into a medical one in up to three stages, in the order given:

1. `knowledge`: continued pre-training on medical text, packed into fixed-length blocks;
2. `instruction`: instruction tuning on chat `messages` (loss on the assistant's reply only);
3. `task`: the target task (PubMedQA) in exactly the prompt format the `voc` strategies send at inference.

Each stage starts from the previous stage's output folder (or `start_from`), trains with LoRA (merged into the
weights at the end of the stage) or fully, and writes a plain Hugging Face model folder.

Paths: `${VAR}` and `~` are expanded; relative data paths are taken from the data root (`data_root`, else
`voc.datasets.data_root()`: $VOC_DATA_ROOT or ../shared/data); `${VOC_DATA_ROOT}` falls back to that same search
when the variable is unset. Other relative paths (output_dir, base_model, templates) are relative to the working directory.

Test splits: every record of every source is checked by content against the test splits under the data root
(finetune/leakage.py). `leakage: refuse` (the default) stops at a leaking record; `leakage: filter`, on the config or
on one source, drops and counts them.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

StageKind = Literal["knowledge", "instruction", "task"]
STAGE_KINDS: tuple[str, ...] = ("knowledge", "instruction", "task")
TASK_FORMATS: tuple[str, ...] = ("voc_verify", "voc_choose", "direct", "cot")
TaskFormat = Literal["voc_verify", "voc_choose", "direct", "cot"]
MCQ_DATASETS: tuple[str, ...] = ("medqa", "medqa_5options", "medmcqa", "mmlu_medical")
LeakageMode = Literal["refuse", "filter"]
LEAKAGE_HELP = (
    "records that match a test split (finetune/leakage.py): 'refuse' stops with an error naming the first one, "
    "'filter' drops them and counts them in run.json"
)


class ConfigError(ValueError):
    """A bad fine-tuning config; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- data sources -----------------------------------------------------------------------------------------------


class _Source(_Strict):
    limit: int | None = Field(default=None, ge=1, description="use at most this many records (a seeded sample of the clean ones)")
    leakage: LeakageMode | None = Field(default=None, description=LEAKAGE_HELP + "; default the config's `leakage`")


class TextSource(_Source):
    """Stage 1: plain text. `path`: a .txt file, a .jsonl file (field `text_field`), a folder of them, or a glob."""

    type: Literal["text"]
    path: str
    text_field: str = "text"


class PubMedQAAbstracts(_Source):
    """Stage 1: the abstracts (CONTEXTS) of PubMedQA's 500 labelled NON-test questions."""

    type: Literal["pubmedqa_abstracts"]
    path: str | None = Field(default=None, description="folder with ori_pqal.json and test_ground_truth.json; default <data root>/pubmedqa")


class MessagesSource(_Source):
    """Stage 2: instruction JSONL, one `{"messages": [{"role": ..., "content": ...}, ...]}` per line, ending with the assistant."""

    type: Literal["messages"]
    path: str


class PubMedQAInstructions(_Source):
    """Stage 2: PubMedQA's 500 NON-test questions as free-form instructions answered with their long answers."""

    type: Literal["pubmedqa_instructions"]
    path: str | None = None


class MCQInstructions(_Source):
    """Stage 2: a labelled multiple-choice TRAINING file in a `voc.datasets` loader's format, as instructions."""

    type: Literal["mcq_instructions"]
    dataset: Literal["medqa", "medqa_5options", "medmcqa", "mmlu_medical"]
    path: str = Field(description="your training file (the shared test files are refused)")


class QAInstructions(_Source):
    """Stage 2: free-form question-answer pairs from a JSONL file (MedQuAD's layout by default) as instructions,
    rendered by instruct_qa.jinja; the loss covers the answer."""

    type: Literal["qa_instructions"]
    path: str
    question_field: str = "question"
    answer_field: str = "answer"


class PubMedQATask(_Source):
    """Stage 3: PubMedQA's 500 NON-test questions, rendered with the inference templates of the chosen formats."""

    type: Literal["pubmedqa_task"]
    path: str | None = None
    formats: list[TaskFormat] = Field(default_factory=lambda: ["voc_verify", "voc_choose", "direct"], min_length=1)


class MCQTask(_Source):
    """Stage 3: a labelled multiple-choice TRAINING file, rendered with the inference templates of the chosen formats."""

    type: Literal["mcq_task"]
    dataset: Literal["medqa", "medqa_5options", "medmcqa", "mmlu_medical"]
    path: str
    formats: list[TaskFormat] = Field(default_factory=lambda: ["voc_verify", "voc_choose", "direct"], min_length=1)


DataSource = Annotated[
    TextSource | PubMedQAAbstracts | MessagesSource | QAInstructions | PubMedQAInstructions | MCQInstructions | PubMedQATask | MCQTask,
    Field(discriminator="type"),
]
SOURCES_BY_KIND: dict[str, tuple[str, ...]] = {
    "knowledge": ("text", "pubmedqa_abstracts"),
    "instruction": ("messages", "qa_instructions", "pubmedqa_instructions", "mcq_instructions"),
    "task": ("pubmedqa_task", "mcq_task"),
}


# --- training settings ------------------------------------------------------------------------------------------


class LoRASettings(_Strict):
    """LoRA adapter settings (PEFT). `target_modules`: "all-linear" or a list of module names like [q_proj, v_proj]."""

    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: str | list[str] = "all-linear"


class Stage(_Strict):
    """One stage: its kind, data, starting point and hyperparameters."""

    kind: StageKind
    name: str | None = Field(default=None, description="folder name part; default the kind")
    start_from: str | None = Field(
        default=None, description="None: the previous stage's output (the base model for the first stage); 'base'; or a model path/hub id"
    )
    data: list[DataSource] = Field(min_length=1)
    method: Literal["lora", "full"] = "lora"
    lora: LoRASettings = Field(default_factory=LoRASettings)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int | None = Field(default=None, ge=1, description="if set, overrides epochs")
    learning_rate: float = Field(default=2e-4, gt=0)
    batch_size: int = Field(default=4, ge=1, description="per device")
    grad_accumulation: int = Field(default=1, ge=1)
    max_length: int = Field(default=1024, ge=16, description="knowledge: packed block length; instruction/task: longest example in tokens")
    group_by_length: bool = Field(
        default=False, description="batch examples of similar length together (less padding; batches are still shuffled)"
    )
    warmup_steps: float = Field(default=0.03, ge=0, description="an int number of steps, or a ratio of the total steps when below 1")
    weight_decay: float = Field(default=0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup", "cosine_with_min_lr"] = "cosine"
    max_grad_norm: float = Field(default=1.0, gt=0)
    save_steps: int = Field(default=500, ge=1)
    save_total_limit: int | None = Field(default=2, ge=1)
    logging_steps: int = Field(default=10, ge=1)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"stage name {value!r} must be a simple folder name (letters, digits, _ . -)")
        return value

    @field_validator("warmup_steps")
    @classmethod
    def _warmup_int_or_ratio(cls, value: float) -> float:
        if value >= 1 and value != int(value):
            raise ValueError(f"warmup_steps {value} must be a whole number of steps, or a ratio below 1")
        return int(value) if value >= 1 else value

    @model_validator(mode="after")
    def _sources_fit_the_kind(self) -> Stage:
        allowed = SOURCES_BY_KIND[self.kind]
        for source in self.data:
            if source.type not in allowed:
                raise ValueError(f"data type {source.type!r} does not fit a {self.kind!r} stage; use one of {', '.join(allowed)}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind


class FinetuneConfig(_Strict):
    """A whole fine-tuning run (see the module docstring)."""

    base_model: str | None = Field(default=None, description="None: the embedded SmolLM2-135M-Instruct; a folder, a .gguf file or a hub id")
    output_dir: str
    data_root: str | None = Field(default=None, description="relative data paths start here; default voc.datasets.data_root()")
    templates: str | None = Field(default=None, description="a folder of .jinja files overriding the built-in prompts (same at inference)")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0
    trust_remote_code: bool = False
    leakage: LeakageMode = Field(default="refuse", description=LEAKAGE_HELP + "; a source's own `leakage` wins")
    stages: list[Stage] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_stage_names(self) -> FinetuneConfig:
        seen: set[str] = set()
        for stage in self.stages:
            if stage.label in seen:
                raise ValueError(f"two stages are called {stage.label!r}; give them different `name`s")
            seen.add(stage.label)
        return self

    def stage_dir(self, index: int) -> Path:
        """The output model folder of stage `index` (0-based): <output_dir>/<n>-<name>."""
        return Path(self.output_dir) / f"{index + 1}-{self.stages[index].label}"

    def checkpoint_dir(self, index: int) -> Path:
        return Path(self.output_dir) / "checkpoints" / f"{index + 1}-{self.stages[index].label}"

    def resolve_data_path(self, path: str | None) -> Path | None:
        """A data path with variables expanded; relative paths start at the data root."""
        if path is None:
            return None
        resolved = Path(expand(path)).expanduser()
        if resolved.is_absolute():
            return resolved
        return self.data_root_path() / resolved

    def base_model_path(self) -> str | None:
        """`base_model` with ${VAR} and ~ expanded (None: the embedded model)."""
        return os.path.expanduser(expand(self.base_model)) if self.base_model else None

    def leakage_mode(self, source: BaseModel) -> LeakageMode:
        """What to do with a source's records that match a test split: its own `leakage`, else the config's."""
        return getattr(source, "leakage", None) or self.leakage

    def data_root_path(self) -> Path:
        """The data root: `data_root` expanded, else voc.datasets.data_root() (FileNotFoundError when there is none)."""
        if self.data_root is not None:
            return Path(expand(self.data_root)).expanduser()
        from voc.datasets import data_root

        return data_root()


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand(text: str) -> str:
    """Expand ${VAR} / $VAR; an unset VOC_DATA_ROOT means voc.datasets.data_root(), any other unset variable is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in os.environ:
            return os.environ[name]
        if name == "VOC_DATA_ROOT":
            from voc.datasets import data_root

            return str(data_root())
        raise ConfigError(f"environment variable {name} in {text!r} is not set; set it or write the path out")

    return _VAR.sub(value, text)


# --- loading ----------------------------------------------------------------------------------------------------


def _location(loc: tuple[Any, ...]) -> str:
    """pydantic's ('stages', 0, 'data', 0, 'text', 'path') -> 'stages[0].data[0].path' (union tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _SOURCE_TAGS or str(part).startswith(("function-", "tagged-union")):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


_SOURCE_TAGS = {tag for tags in SOURCES_BY_KIND.values() for tag in tags}


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed where an unknown key was found (for a 'did you mean' hint)."""
    model: type[BaseModel] | None = FinetuneConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        model = _SOURCE_MODELS.get(str(part)) or {"stages": Stage, "lora": LoRASettings}.get(str(part))
    return sorted(model.model_fields) if model is not None else []


_SOURCE_MODELS: dict[str, type[BaseModel]] = {
    "text": TextSource,
    "pubmedqa_abstracts": PubMedQAAbstracts,
    "messages": MessagesSource,
    "qa_instructions": QAInstructions,
    "pubmedqa_instructions": PubMedQAInstructions,
    "mcq_instructions": MCQInstructions,
    "pubmedqa_task": PubMedQATask,
    "mcq_task": MCQTask,
}


def explain(error: ValidationError) -> str:
    """The first validation problem as one line naming the key."""
    item = error.errors()[0]
    loc = tuple(item.get("loc", ()))
    where = _location(loc) or "the config"
    if item["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        return f"unknown key {where!r}{hint}"
    if item["type"] == "missing":
        return f"missing required key {where!r}"
    message = str(item.get("msg", "")).removeprefix("Value error, ")
    if item["type"] == "union_tag_invalid":
        message = f"unknown data type {item.get('input', {}).get('type')!r}; use one of {', '.join(_SOURCE_MODELS)}"
    elif item["type"] == "union_tag_not_found":
        message = f"each data source needs a `type` ({', '.join(_SOURCE_MODELS)})"
    value = item.get("input")
    shown = "" if isinstance(value, dict | list) or item["type"].startswith("union_tag") else f" (got {value!r})"
    return f"{where}: {message}{shown}"


def parse_config(data: Any, source: str = "config") -> FinetuneConfig:
    """Validate a config mapping; raises ConfigError with a one-line message naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping of keys (base_model, output_dir, stages, ...), got {type(data).__name__}")
    try:
        return FinetuneConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{source}: {explain(error)}") from None


def load_config(path: str | os.PathLike[str]) -> FinetuneConfig:
    """Read and validate a fine-tuning YAML file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"config file {file} does not exist; give the path of a fine-tuning YAML file")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{file}{where}: invalid YAML ({problem})") from None
    return parse_config(data, str(file))
