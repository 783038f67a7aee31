"""The training loop: one function per stage on transformers' Trainer, read top to bottom.

    run(config)                      every stage, in order (or the ones asked for)
      run_stage(config, index)       one stage:
        1. start model: the previous stage's output folder (or the base model / `start_from`)
        2. data: finetune.data.build_stage_data -> token records, every source screened against the test splits
           (finetune/leakage.py: a leak is refused, or with `leakage: filter` dropped and counted)
        3. model: full weights, or LoRA adapters (PEFT) on the frozen weights
        4. Trainer.train(), with periodic checkpoints under <output_dir>/checkpoints/<stage>/ (resumable)
        5. export: LoRA adapters merged into the weights (merge_and_unload), saved with the tokenizer as a plain
           Hugging Face folder <output_dir>/<n>-<stage>/ that the next stage, VoC(path), vLLM and transformers load
        6. run.json in that folder: losses per logging step, data counts, leakage screening, config, timings

Under `accelerate launch` or `torchrun` the Trainer runs data parallel (DDP, or FSDP / DeepSpeed from the accelerate
config); the export and run.json happen on the main process, the others wait for it.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from finetune.config import ConfigError, FinetuneConfig, Stage
from finetune.data import IGNORE, build_stage_data
from voc.hardware import describe_hardware
from voc.models import resolve_model
from voc.prompts import Templates

log = logging.getLogger("finetune")

RUN_FILE = "run.json"
FINGERPRINT_FILE = "stage.json"


# --- choices made before training ----------------------------------------------------------------------------------


def pick_precision(name: str) -> str:
    """'auto' -> bf16 on GPUs that have it, fp16 on other GPUs, fp32 on CPU."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def weights_dtype(precision: str, method: str) -> torch.dtype:
    """The dtype the model is loaded in. LoRA keeps frozen weights in bf16; full training keeps fp32 master weights
    (bf16/fp16 then run as autocast mixed precision)."""
    return torch.bfloat16 if precision == "bf16" and method == "lora" else torch.float32


def save_dtype(precision: str) -> torch.dtype:
    """The dtype of the saved model folder."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def start_model(config: FinetuneConfig, index: int) -> str:
    """Where stage `index` starts: `start_from`, else the previous stage's output, else the base model."""
    stage = config.stages[index]
    if stage.start_from == "base" or (stage.start_from is None and index == 0):
        return resolve_model(config.base_model_path())
    if stage.start_from is not None:
        return resolve_model(stage.start_from)
    previous = config.stage_dir(index - 1)
    if not is_complete(previous):
        raise FileNotFoundError(
            f"stage {index + 1} ({stage.label}) starts from stage {index}'s output {previous}, which is missing or unfinished; "
            f"run stage {index} first (voc finetune CONFIG --stage {index})"
        )
    return str(previous)


def is_complete(folder: Path) -> bool:
    """True when a stage folder holds a finished model (config.json and a run.json with status 'complete')."""
    try:
        return (folder / "config.json").is_file() and json.loads((folder / RUN_FILE).read_text())["status"] == "complete"
    except (OSError, ValueError, KeyError):
        return False


def fingerprint(config: FinetuneConfig, stage: Stage, start: str, templates: Templates) -> str:
    """What makes a stage's checkpoints reusable: its settings, the start model, the templates, the run-wide settings."""
    payload = {
        "stage": stage.model_dump(mode="json"),
        "start": start,
        "start_finished_at": _read_json(Path(start) / RUN_FILE).get("finished_at"),  # a re-run previous stage is a new start
        "templates": templates.source_hash(),
        "run": config.model_dump(
            mode="json", include={"precision", "gradient_checkpointing", "seed", "base_model", "data_root", "leakage"}
        ),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def leakage_line(report: dict[str, Any]) -> str:
    """One log line from a stage's leakage report (finetune.data.leakage_counts): what was checked, what was dropped."""
    checked = ", ".join(f"{split} {n}" for split, n in report.get("checked", {}).items()) or "nothing"
    missing = f"; NOT checked (files missing): {', '.join(report['missing'])}" if report.get("missing") else ""
    dropped = report.get("dropped", 0)
    by_split = ", ".join(f"{split} {n}" for split, n in report.get("dropped_by_split", {}).items())
    return f"leakage: data checked against the test splits ({checked}){missing}; dropped {dropped}" + (f" ({by_split})" if dropped else "")


def pad_batch(features: list[dict[str, list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: padding gets attention 0 and label IGNORE (no loss)."""
    width = max(len(f["input_ids"]) for f in features)
    ids = [f["input_ids"] + [pad_id] * (width - len(f["input_ids"])) for f in features]
    labels = [f["labels"] + [IGNORE] * (width - len(f["labels"])) for f in features]
    mask = [[1] * len(f["input_ids"]) + [0] * (width - len(f["input_ids"])) for f in features]
    return {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels), "attention_mask": torch.tensor(mask)}


# --- one stage ----------------------------------------------------------------------------------------------------


def run_stage(config: FinetuneConfig, index: int, resume: bool = False, progress: bool = True) -> Path:
    """Train stage `index` (0-based) and return its output model folder."""
    from datasets import Dataset
    from transformers import set_seed

    stage = config.stages[index]
    out_dir, ckpt_dir = config.stage_dir(index), config.checkpoint_dir(index)
    procs = processes()
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    templates = Templates(config.templates)

    # 1. start model ------------------------------------------------------------------------------------------------
    start = start_model(config, index)
    procs.log(f"stage {index + 1}/{len(config.stages)} ({stage.kind}, {stage.method}): {start} -> {out_dir}")
    stamp = fingerprint(config, stage, start, templates)
    resume_from = resume_checkpoint(ckpt_dir, stage, stamp, procs) if resume else None
    # a run stopped right after its last checkpoint has nothing left to train (Trainer.train would take an extra step)
    done = _read_json(Path(resume_from) / "trainer_state.json") if resume_from else {}
    finished = bool(done) and done.get("global_step", 0) >= done.get("max_steps", 1 << 62)
    # the Trainer's settings come first: they start the process group under torchrun / accelerate launch, and DeepSpeed
    # ZeRO-3 must know its config before the model loads
    precision = pick_precision(config.precision)
    args = training_arguments(config, stage, ckpt_dir, precision, progress, procs.world_size)
    procs = Processes(rank=args.process_index, world_size=args.world_size)  # as the Trainer sees them
    prepare_folders(procs, ckpt_dir, out_dir, stamp, start, fresh=resume_from is None)

    # 2. data ------------------------------------------------------------------------------------------------------
    tokenizer, pad_id = load_tokenizer(start, config.trust_remote_code)
    data = build_stage_data(config, stage, tokenizer, templates, progress=progress and procs.is_main)
    dataset = Dataset.from_list(data.records)
    data_seconds = time.perf_counter() - clock
    procs.log(f"data: {json.dumps({k: v for k, v in data.counts.items() if k not in ('sources', 'leakage')})}")
    procs.log(leakage_line(data.counts.get("leakage") or {}))

    # 3. model and 4. train ----------------------------------------------------------------------------------------
    set_seed(config.seed)
    if finished:
        procs.log(f"{resume_from} is the last step: nothing left to train")
        trained = Trained(Path(str(resume_from)), done.get("log_history", []), done["global_step"], {})
    else:
        trained = train_model(config, stage, start, precision, args, dataset, pad_id, resume_from, ckpt_dir, procs)

    # 5. export ----------------------------------------------------------------------------------------------------
    save_clock = time.perf_counter()
    procs.wait()
    if procs.is_main:
        export_stage(start, trained.folder, out_dir, stage.method, save_dtype(precision), tokenizer, config.trust_remote_code)
    save_seconds = time.perf_counter() - save_clock

    # 6. run.json ----------------------------------------------------------------------------------------------------
    if procs.is_main:
        seconds = {"data": data_seconds, "train": trained.seconds, "export": save_seconds, "total": time.perf_counter() - clock}
        record = run_record(
            config, index, trained, data.counts, start=start, out_dir=out_dir, resumed_from=resume_from, precision=precision,
            world_size=procs.world_size, seconds=seconds, started=started, stamp=stamp, templates=templates,
        )
        (out_dir / RUN_FILE).write_text(json.dumps(record, indent=2))
        procs.log(f"stage {index + 1} done in {record['timings']['total_seconds']:.0f}s: loss {record['first_loss']} -> "
                  f"{record['last_loss']} over {trained.steps} steps; model in {out_dir}")
    procs.wait()
    return out_dir


# --- the steps of a stage ------------------------------------------------------------------------------------------


@dataclass
class Trained:
    """What training left: the trained folder (or the finished checkpoint), the Trainer's log, steps, metrics, time."""

    folder: Path
    history: list[dict[str, Any]]
    steps: int
    metrics: dict[str, Any]
    seconds: float = 0.0
    parameters: dict[str, int | None] = field(default_factory=lambda: {"trainable": None, "total": None})


def resume_checkpoint(ckpt_dir: Path, stage: Stage, stamp: str, procs: Processes) -> str | None:
    """The stage's latest checkpoint, if any; refused when the stage's settings changed since it was saved."""
    from transformers.trainer_utils import get_last_checkpoint

    resume_from = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    if resume_from is not None:
        saved = _read_json(ckpt_dir / FINGERPRINT_FILE).get("fingerprint")
        if saved != stamp:
            raise ConfigError(
                f"the settings of stage {stage.label!r} (config, start model or templates) changed since {resume_from} was saved; "
                "run without --resume to start this stage afresh"
            )
        procs.log(f"resuming from {resume_from}")
    return resume_from


def training_arguments(config: FinetuneConfig, stage: Stage, ckpt_dir: Path, precision: str, progress: bool, world_size: int) -> Any:
    """The Trainer's settings for a stage (creating them starts the process group under torchrun / accelerate)."""
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=stage.epochs,
        max_steps=stage.max_steps or -1,
        per_device_train_batch_size=stage.batch_size,
        train_sampling_strategy="group_by_length" if stage.group_by_length else "random",
        gradient_accumulation_steps=stage.grad_accumulation,
        learning_rate=stage.learning_rate,
        lr_scheduler_type=stage.lr_scheduler,
        warmup_steps=stage.warmup_steps,
        weight_decay=stage.weight_decay,
        max_grad_norm=stage.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=config.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if config.gradient_checkpointing else None,
        logging_steps=stage.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=stage.save_steps,
        save_total_limit=stage.save_total_limit,
        seed=config.seed,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=world_size > 1 and not torch.cuda.is_available(),  # several processes without GPUs: DDP over gloo
    )


def prepare_folders(procs: Processes, ckpt_dir: Path, out_dir: Path, stamp: str, start: str, fresh: bool) -> None:
    """On the main process: a fresh checkpoint folder unless resuming, its fingerprint, and no old output folder."""
    if procs.is_main:
        if fresh and ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)  # a fresh start: old checkpoints would confuse a later --resume
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (ckpt_dir / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": stamp, "start": start}))
        if out_dir.exists():
            shutil.rmtree(out_dir)
    procs.wait()


def load_tokenizer(start: str, trust_remote_code: bool) -> tuple[Any, int]:
    """The start model's tokenizer and its padding id (the end-of-sequence token when it has no pad token)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(start, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"the tokenizer of {start} has no end-of-sequence token; fine-tuning needs one to end replies and documents")
    return tokenizer, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def load_model(config: FinetuneConfig, stage: Stage, start: str, precision: str) -> Any:
    """The start model in its training dtype; for a LoRA stage, with LoRA adapters (PEFT) on its frozen weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        start, dtype=weights_dtype(precision, stage.method), trust_remote_code=config.trust_remote_code
    )
    model.config.use_cache = False
    if stage.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=stage.lora.r, lora_alpha=stage.lora.alpha, lora_dropout=stage.lora.dropout,
            target_modules=stage.lora.target_modules, task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model


def train_model(
    config: FinetuneConfig, stage: Stage, start: str, precision: str, args: Any, dataset: Any, pad_id: int, resume_from: str | None,
    ckpt_dir: Path, procs: Processes,
) -> Trained:
    """Load the start model, train it with the Trainer and save it (adapters only for LoRA) under the checkpoints folder."""
    from transformers import Trainer

    model = load_model(config, stage, start, precision)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    procs.log(f"model: {trainable:,} of {total:,} parameters trainable; precision {precision}")
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=lambda batch: pad_batch(batch, pad_id))
    clock = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    seconds = time.perf_counter() - clock
    folder = ckpt_dir / ("final-adapter" if stage.method == "lora" else "final-model")
    trainer.save_model(str(folder))  # gathers the weights under FSDP / DeepSpeed; writes on the main process
    trained = Trained(folder, list(trainer.state.log_history), trainer.state.global_step, dict(result.metrics), seconds,
                      {"trainable": trainable, "total": total})
    del trainer, model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return trained


def export_stage(start: str, trained: Path, out_dir: Path, method: str, dtype: torch.dtype, tokenizer: Any, remote_code: bool) -> None:
    """The stage's output folder: the exported model and the tokenizer (a full model's checkpoint copy is then dropped)."""
    export_model(start, trained, out_dir, method, dtype, remote_code)
    tokenizer.save_pretrained(out_dir)
    if trained.name == "final-model":
        shutil.rmtree(trained, ignore_errors=True)  # the exported folder is the same model; keep one copy


def run_record(
    config: FinetuneConfig, index: int, trained: Trained, data_counts: dict[str, Any], *, start: str, out_dir: Path,
    resumed_from: str | None, precision: str, world_size: int, seconds: dict[str, float], started: datetime,
    stamp: str, templates: Templates,
) -> dict[str, Any]:
    """run.json of a finished stage: what ran, on what, the losses per logging step, data counts and timings."""
    stage = config.stages[index]
    losses = [
        {k: entry[k] for k in ("step", "epoch", "loss", "learning_rate", "grad_norm") if k in entry}
        for entry in trained.history if "loss" in entry
    ]
    return {
        "status": "complete",
        "stage": index + 1,
        "name": stage.label,
        "kind": stage.kind,
        "method": stage.method,
        "start_model": start,
        "output": str(out_dir),
        "resumed_from": resumed_from,
        "precision": precision,
        "saved_dtype": str(save_dtype(precision)).removeprefix("torch."),
        "parameters": trained.parameters,
        "world_size": world_size,
        "device": _device_name(),
        "steps": trained.steps,
        "data": data_counts,
        "leakage": data_counts.get("leakage"),
        "losses": losses,
        "first_loss": losses[0]["loss"] if losses else None,
        "last_loss": losses[-1]["loss"] if losses else None,
        "train_metrics": trained.metrics,
        "timings": {f"{step}_seconds": round(value, 3) for step, value in seconds.items()},
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "fingerprint": stamp,
        "templates_hash": templates.source_hash(),
        "config": {
            "stage": stage.model_dump(mode="json"),
            "run": config.model_dump(mode="json", exclude={"stages"}),
        },
        "versions": _versions(),
    }


def export_model(start: str, trained: Path, out_dir: Path, method: str, dtype: torch.dtype, trust_remote_code: bool = False) -> None:
    """Write the stage's plain model folder: for LoRA, the start model with the adapters merged into its weights."""
    from transformers import AutoModelForCausalLM

    if method == "lora":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(start, dtype=dtype, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(base, str(trained)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(trained), dtype=dtype, trust_remote_code=trust_remote_code)
    model.config.use_cache = True
    model.save_pretrained(out_dir)


# --- the whole run -----------------------------------------------------------------------------------------------


def select_stages(config: FinetuneConfig, stage: str | int | None) -> list[int]:
    """0-based indices to run: all, or the one named by its 1-based number or its name."""
    if stage is None:
        return list(range(len(config.stages)))
    names = [s.label for s in config.stages]
    if isinstance(stage, str) and not stage.isdigit():
        if stage not in names:
            raise ConfigError(f"no stage called {stage!r}; the config has {', '.join(names)}")
        return [names.index(stage)]
    number = int(stage)
    if not 1 <= number <= len(config.stages):
        raise ConfigError(f"--stage {number} is out of range; the config has stages 1-{len(config.stages)} ({', '.join(names)})")
    return [number - 1]


def run(config: FinetuneConfig, stage: str | int | None = None, resume: bool = False, progress: bool = True) -> Path:
    """Run the selected stages in order; returns the last stage's output folder.

    With `resume`, finished stages are skipped and an interrupted one continues from its latest checkpoint.
    After the last stage of the config, <output_dir>/final points to its folder.
    """
    procs = processes()
    output = Path(config.output_dir)
    for index in select_stages(config, stage):
        folder = config.stage_dir(index)
        if resume and is_complete(folder):
            procs.log(f"stage {index + 1} ({config.stages[index].label}) is complete in {folder}; skipped (--resume)")
            output = folder
            continue
        output = run_stage(config, index, resume=resume, progress=progress)
    if output == config.stage_dir(len(config.stages) - 1) and procs.is_main:
        link = Path(config.output_dir) / "final"
        if link.is_symlink() or link.exists():
            link.unlink()
        with contextlib.suppress(OSError):  # no symlinks (some Windows setups): the stage folder is the final model
            link.symlink_to(output.name, target_is_directory=True)
    return output


# --- small helpers -------------------------------------------------------------------------------------------------


@dataclass
class Processes:
    """This process's place under torchrun / accelerate launch (rank 0 of 1 for a plain process)."""

    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Wait for every process (a no-op without a process group)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()

    def log(self, message: str) -> None:
        if self.is_main:
            log.info(message)


def processes() -> Processes:
    return Processes(rank=int(os.environ.get("RANK", "0")), world_size=int(os.environ.get("WORLD_SIZE", "1")))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _device_name() -> str:
    hardware = describe_hardware()
    if "gpu" in hardware:
        return f"{hardware['gpu_count']} x {hardware['gpu']}"
    return f"cpu ({hardware['cpu']}, {hardware['cpu_count']} cores)"


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}
