"""finetune/: config validation, the data builders (test-split refusal, inference-identical stage-3 prompts) and all
three stages end to end on the tiny random Llama with real PubMedQA train-split data."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from finetune.config import ConfigError, load_config, parse_config
from finetune.data import (
    IGNORE,
    TestSplitError,
    encode_example,
    instruction_example,
    mcq_training_questions,
    pack_blocks,
    pubmedqa_train_questions,
    read_messages,
    read_qa_records,
    refuse_test_questions,
    task_examples,
    verification_target,
)
from voc.engines.base import ChatPrompt, Engine, Generation, SamplingParams, Scores
from voc.prompts import Templates
from voc.strategies import Direct, VerificationOfChoice

CONFIGS = Path(__file__).resolve().parents[1] / "finetune" / "configs"


def minimal(**changes: object) -> dict:
    config = {"output_dir": "out", "stages": [{"kind": "task", "data": [{"type": "pubmedqa_task"}]}]}
    config.update(changes)
    return config


# --- config ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (minimal(bse_model="x"), "unknown key 'bse_model'; did you mean 'base_model'?"),
        (minimal(stages=[{"kind": "task", "lerning_rate": 1, "data": [{"type": "pubmedqa_task"}]}]), "key 'stages[0].lerning_rate'"),
        (minimal(stages=[{"kind": "task", "learning_rate": -1, "data": [{"type": "pubmedqa_task"}]}]), "stages[0].learning_rate"),
        (minimal(stages=[{"kind": "task", "lora": {"rank": 8}, "data": [{"type": "pubmedqa_task"}]}]), "'stages[0].lora.rank'"),
        (minimal(stages=[{"kind": "task", "data": [{"type": "pubmedqa_task", "lmit": 3}]}]), "unknown key 'stages[0].data[0].lmit'"),
        (minimal(stages=[{"kind": "task", "data": [{"type": "txt"}]}]), "unknown data type 'txt'"),
        (minimal(stages=[{"kind": "task", "data": [{"type": "text", "path": "a.txt"}]}]), "does not fit a 'task' stage"),
        (minimal(stages=[{"kind": "pretrain", "data": [{"type": "text", "path": "a.txt"}]}]), "stages[0].kind"),
        (minimal(stages=[{"kind": "task", "method": "qlora", "data": [{"type": "pubmedqa_task"}]}]), "stages[0].method"),
        (minimal(precision="int8"), "precision"),
        (minimal(stages=[]), "stages"),
        ({"stages": [{"kind": "task", "data": [{"type": "pubmedqa_task"}]}]}, "missing required key 'output_dir'"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, config: dict, message: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as error:
        load_config(file)
    text = str(error.value)
    assert message in text
    assert str(file) in text and "\n" not in text


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("stages: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(broken)


def test_data_paths_start_at_the_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOC_DATA_ROOT", str(tmp_path))
    config = parse_config(minimal(data_root="${VOC_DATA_ROOT}"))
    assert config.resolve_data_path("pubmedqa") == tmp_path / "pubmedqa"
    assert config.resolve_data_path("/abs/file.jsonl") == Path("/abs/file.jsonl")
    assert parse_config(minimal()).resolve_data_path("medqa/train.jsonl") == tmp_path / "medqa" / "train.jsonl"
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE"):
        parse_config(minimal(data_root="${NOT_SET_ANYWHERE}/data")).resolve_data_path("x")
    monkeypatch.setenv("VOC_BENCH_MODEL", "/models/qwen.gguf")
    assert parse_config(minimal(base_model="${VOC_BENCH_MODEL}")).base_model_path() == "/models/qwen.gguf"
    with pytest.raises(ConfigError, match="environment variable NOT_SET_ANYWHERE"):
        parse_config(minimal(base_model="${NOT_SET_ANYWHERE}")).base_model_path()


@pytest.mark.parametrize("name", ["smoke.yaml", "antglm-med-style.yaml", "smollm2-medical.yaml", "qwen2.5-0.5b-medical.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert [s.kind for s in config.stages] == ["knowledge", "instruction", "task"]


# --- data builders ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def train_questions(data_root: Path) -> list:
    return pubmedqa_train_questions(data_root / "pubmedqa", limit=6, seed=0)


def test_builders_refuse_the_pubmedqa_test_split(data_root: Path) -> None:
    from voc.datasets import load_pubmedqa

    test_question = load_pubmedqa(data_root / "pubmedqa", split="test")[0]
    templates = Templates()
    with pytest.raises(TestSplitError, match="in PubMedQA's test split"):
        task_examples(test_question, templates, ["voc_verify", "voc_choose", "direct"])
    with pytest.raises(TestSplitError, match=test_question.metadata["pmid"]):
        instruction_example(test_question, templates, "pubmedqa_instruction")
    with pytest.raises(TestSplitError):
        refuse_test_questions([test_question])
    # without its PMID the question is still refused by its text
    anonymous = test_question.model_copy(update={"id": "mine-1", "metadata": {}})
    with pytest.raises(TestSplitError, match="question text equals pubmedqa test question"):
        refuse_test_questions([anonymous])
    train = pubmedqa_train_questions(data_root / "pubmedqa", limit=None, seed=0)
    assert len(train) == 400  # the training split: neither test nor dev
    refuse_test_questions(train)  # the 400 training questions pass


def test_mcq_builder_refuses_test_files(data_root: Path) -> None:
    with pytest.raises(TestSplitError, match="test file"):
        mcq_training_questions("medqa", data_root / "medqa" / "test.jsonl", None, 0, data_root)


def test_pack_blocks_fixed_length_with_eos_between_documents(tokenizer) -> None:
    texts = ["Aspirin inhibits platelet aggregation. " * 20, "Heparin is an anticoagulant. " * 20]
    records, n_tokens = pack_blocks(texts, tokenizer, 32)
    assert len(records) == n_tokens // 32 >= 2
    assert all(len(r["input_ids"]) == 32 and r["labels"] == r["input_ids"] for r in records)
    stream = [t for r in records for t in r["input_ids"]]
    assert tokenizer.eos_token_id in stream


def test_messages_loss_only_on_the_reply(tmp_path: Path, tokenizer) -> None:
    file = tmp_path / "chat.jsonl"
    rows = [{"messages": [{"role": "user", "content": "What does aspirin inhibit?"}, {"role": "assistant", "content": "Cyclooxygenase."}]}]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (example,) = read_messages(file)
    record = encode_example(tokenizer, example)
    reply = tokenizer("Cyclooxygenase.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    n_prompt = len(record["input_ids"]) - len(reply)
    assert record["labels"] == [IGNORE] * n_prompt + reply
    assert record["input_ids"][n_prompt:] == reply
    file.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match=r"line 1.*end with the assistant"):
        read_messages(file)


def test_qa_pairs_become_instructions_with_the_loss_on_the_answer(tmp_path: Path, tokenizer) -> None:
    file = tmp_path / "qa.jsonl"
    rows = [{"question": "What causes gout?", "answer": "Uric acid crystals in the joints."}, {"question": "x", "answer": "  "}]
    file.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    ((line, example),) = read_qa_records(file, Templates())  # the blank answer is skipped
    assert line == 1 and example.prompt.messages[-1] == {"role": "user", "content": "What causes gout?"}
    record = encode_example(tokenizer, example)
    reply = [t for t in record["labels"] if t != IGNORE]
    assert tokenizer.decode(reply[:-1]).strip() == "Uric acid crystals in the joints." and reply[-1] == tokenizer.eos_token_id
    stem = tmp_path / "stem.jsonl"
    stem.write_text(json.dumps({"stem": "What causes gout?", "answer": "Uric acid."}) + "\n")
    with pytest.raises(ValueError, match=r"line 1.*field 'question' is missing.*question_field"):
        read_qa_records(stem, Templates())
    assert read_qa_records(stem, Templates(), question_field="stem")[0][1].response == "Uric acid."


class ScriptedEngine(Engine):
    """Renders with the real HF engine's tokenizer, 'generates' given texts and records every prompt it is sent."""

    def __init__(self, hf_engine: Engine, replies: Sequence[str]) -> None:
        super().__init__()
        self.hf = hf_engine
        self.replies = list(replies)
        self.generated: list[ChatPrompt] = []
        self.scored: list[tuple[ChatPrompt, list[str]]] = []
        self.max_model_len = 100_000

    def generate(self, prompts: Sequence[ChatPrompt], params: SamplingParams) -> list[Generation]:
        self.generated.extend(prompts)
        return [Generation(self.replies.pop(0), 0, 0) for _ in prompts]

    def score(self, prompts: Sequence[ChatPrompt], candidates: Sequence[Sequence[str]]) -> list[Scores]:
        self.scored.extend(zip(prompts, [list(c) for c in candidates], strict=True))
        return [Scores([0.0] * len(c), 0) for c in candidates]

    def render(self, prompt: ChatPrompt) -> str:
        return self.hf.render(prompt)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text)


def test_stage3_examples_are_what_the_strategies_send(tiny_engine, train_questions) -> None:
    """A model that writes exactly the training targets would be sent exactly the training sequences at inference."""
    templates = Templates()
    question = train_questions[0]
    examples = task_examples(question, templates, ["voc_verify", "voc_choose", "direct"])
    verify = [e for e in examples if e.kind == "voc_verify"]
    (choose,) = [e for e in examples if e.kind == "voc_choose"]
    (direct,) = [e for e in examples if e.kind == "direct"]
    assert len(verify) == len(question.labels)

    # voc: the verifications the model should write are what the strategy's verify round generates
    targets = [verification_target(question, label, templates) for label in question.labels]
    engine = ScriptedEngine(tiny_engine, targets)
    VerificationOfChoice(templates, SamplingParams(max_tokens=8)).run([question], engine)
    assert [engine.render(p) for p in engine.generated] == [engine.render(e.prompt) for e in verify]
    verdicts, (choice_prompt, choice_candidates) = engine.scored[:-1], engine.scored[-1]
    for example, (prompt, candidates), label in zip(verify, verdicts, question.labels, strict=True):
        verdict = candidates[0] if label == question.gold else candidates[1]  # verdict_true, verdict_false
        assert example.target.endswith(verdict)
        # the prompt the strategy scores the verdict after == the training prompt + the target up to the verdict
        assert engine.render(prompt) == engine.render(example.prompt) + example.target.removesuffix(verdict)
        # and the training tokens are the engine's tokens for that prompt
        record = encode_example(tiny_engine.tokenizer, example)
        n_prompt = record["labels"].index(next(t for t in record["labels"] if t != IGNORE))
        assert record["input_ids"][:n_prompt] == tiny_engine.encode(tiny_engine.render(example.prompt))
    assert engine.render(choice_prompt) == engine.render(choose.prompt)
    assert choose.response == choice_candidates[question.labels.index(question.gold)]
    assert "Verdict:" not in "".join(targets)  # the template text, never hard-coded: see voc_verify_target.jinja

    # direct: the same prompt and the gold candidate
    engine = ScriptedEngine(tiny_engine, [])
    Direct(templates).run([question], engine)
    ((prompt, candidates),) = engine.scored
    assert engine.render(prompt) == engine.render(direct.prompt)
    assert direct.response == candidates[question.labels.index(question.gold)]


# --- three stages end to end ---------------------------------------------------------------------------------------


def tiny_run_config(tiny_model_dir: Path, data_root: Path, output: Path) -> dict:
    steps = {"max_steps": 6, "batch_size": 2, "logging_steps": 1, "save_steps": 3, "warmup_steps": 0, "lr_scheduler": "constant"}
    lora = {"r": 8, "alpha": 16, "dropout": 0.0}
    return {
        "base_model": str(tiny_model_dir),
        "output_dir": str(output),
        "data_root": str(data_root),
        "seed": 0,
        "stages": [
            {"kind": "knowledge", "method": "full", "learning_rate": 2e-3, "max_length": 128,
             "data": [{"type": "pubmedqa_abstracts", "path": "pubmedqa", "limit": 2}], **steps},
            {"kind": "instruction", "method": "lora", "lora": lora, "learning_rate": 1e-2, "max_length": 320,
             "data": [{"type": "pubmedqa_instructions", "path": "pubmedqa", "limit": 4},
                      {"type": "qa_instructions", "path": "medquad/medquad.jsonl", "limit": 3}], **steps},
            {"kind": "task", "method": "lora", "lora": lora, "learning_rate": 1e-2, "max_length": 512, "group_by_length": True,
             "data": [{"type": "pubmedqa_task", "path": "pubmedqa", "limit": 2, "formats": ["voc_verify", "voc_choose"]},
                      {"type": "mcq_task", "dataset": "medqa", "path": "medqa_train/train_subset.jsonl", "limit": 1,
                       "formats": ["voc_verify"]}], **steps},
        ],
    }


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir: Path, data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    from finetune.train import run

    raw = tiny_run_config(tiny_model_dir, data_root, tmp_path_factory.mktemp("finetune") / "out")
    final = run(parse_config(raw), progress=False)
    return raw, final


def test_three_stages_lower_the_loss_and_chain(finished_run) -> None:
    raw, final = finished_run
    output = Path(raw["output_dir"])
    assert final == output / "3-task"
    assert (output / "final").resolve() == final.resolve()
    previous = raw["base_model"]
    for number, kind in enumerate(["knowledge", "instruction", "task"], start=1):
        folder = output / f"{number}-{kind}"
        record = json.loads((folder / "run.json").read_text())
        assert record["status"] == "complete" and record["kind"] == kind and record["stage"] == number
        assert record["start_model"] == str(previous)  # each stage starts from the previous one's output
        previous = folder
        losses = [entry["loss"] for entry in record["losses"]]
        assert len(losses) == record["steps"] == 6 and all(math.isfinite(x) for x in losses)
        assert sum(losses[-2:]) < sum(losses[:2]), f"stage {kind}: the loss did not go down: {losses}"
        assert record["config"]["stage"]["kind"] == kind and record["config"]["run"]["seed"] == 0
        assert set(record["timings"]) >= {"data_seconds", "train_seconds", "export_seconds", "total_seconds"}
        # a plain HF folder: merged weights and the tokenizer, no adapter
        assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
        assert not (folder / "adapter_config.json").exists()
    knowledge = json.loads((output / "1-knowledge" / "run.json").read_text())["data"]
    assert knowledge["documents"] == 2 and knowledge["blocks"] >= 3 and knowledge["block_size"] == 128
    instruction = json.loads((output / "2-instruction" / "run.json").read_text())["data"]
    medquad = next(s for s in instruction["sources"] if s["type"] == "qa_instructions")
    assert medquad["items"] == 3 and medquad["examples"] + instruction["dropped_too_long"] >= 3
    task = json.loads((output / "3-task" / "run.json").read_text())["data"]
    assert task["examples_by_format"] == {"voc_verify": 6 + 4, "voc_choose": 2}  # 2 PubMedQA x 3 options, 1 MedQA x 4
    assert task["response_tokens"] < task["tokens"]  # the loss covers the targets only


def test_final_model_loads_in_voc_and_answers(finished_run) -> None:
    from voc.api import VoC

    _, final = finished_run
    with VoC(final, strategy="voc", params=SamplingParams(max_tokens=6)) as voc:
        answer = voc.answer("Is aspirin an anticoagulant?", ["yes", "no", "maybe"])
    assert answer.label in {"A", "B", "C"}
    assert set(answer.verifications) == {"A", "B", "C"}
    assert math.isclose(sum(answer.probabilities.values()), 1.0, rel_tol=1e-6)


def test_resume_skips_finished_stages_and_continues_a_checkpoint(finished_run) -> None:
    from finetune.train import run

    raw, final = finished_run
    config = parse_config(raw)
    earlier = [json.loads((Path(raw["output_dir"]) / name / "run.json").read_text()) for name in ("1-knowledge", "2-instruction")]
    run_file = final / "run.json"
    before = json.loads(run_file.read_text())
    run_file.unlink()  # stage 3 now looks interrupted right after its last checkpoint: nothing left to train
    assert run(config, resume=True, progress=False) == final
    after = json.loads(run_file.read_text())
    assert after["resumed_from"].endswith("checkpoint-6") and after["status"] == "complete"
    assert after["steps"] == 6 and after["losses"] == before["losses"]

    run_file.unlink()  # interrupted between checkpoints: steps 4-6 are trained again from checkpoint-3
    shutil.rmtree(Path(raw["output_dir"]) / "checkpoints" / "3-task" / "checkpoint-6")
    assert run(config, resume=True, progress=False) == final
    after = json.loads(run_file.read_text())
    assert after["resumed_from"].endswith("checkpoint-3") and after["steps"] == 6
    assert [e["loss"] for e in after["losses"]] == pytest.approx([e["loss"] for e in before["losses"]], rel=1e-3)
    later = [json.loads((Path(raw["output_dir"]) / name / "run.json").read_text()) for name in ("1-knowledge", "2-instruction")]
    assert later == earlier  # finished stages were skipped, not rerun


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from finetune.cli import main

    assert main([str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err
    from voc.cli import main as voc_main  # the same command as `voc finetune`

    assert voc_main(["finetune", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(minimal(output_dir=str(tmp_path / "out"))))
    assert main([str(config), "--stage", "4"]) == 1
    err = capsys.readouterr().err.strip()
    assert "--stage 4 is out of range" in err and "\n" not in err
