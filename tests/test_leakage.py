"""finetune/leakage.py: fine-tuning data is checked by content against every test split, on the real shared data.

Each case asserts the refusal (or the drop and its count), so disabling the check fails them; the clean training
sources (MedQA train subset and dev, PubMedQA's 400 training questions, a MedQuAD sample) must pass untouched.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from finetune.config import parse_config
from finetune.data import build_stage_data, mcq_training_questions, pubmedqa_abstract, pubmedqa_train_questions
from finetune.leakage import Guard, LeakageIndex, TestSplitError, leakage_index, normalise
from voc.datasets import load_dataset, load_pubmedqa, read_jsonl
from voc.prompts import Templates


@pytest.fixture(scope="module")
def index(data_root: Path) -> LeakageIndex:
    return leakage_index(data_root)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def pubmedqa_test(data_root: Path) -> list:
    return list(load_pubmedqa(data_root / "pubmedqa", split="test"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def stage_config(data_root: Path, kind: str, source: dict, **run: object) -> dict:
    stage = {"kind": kind, "max_length": 2048, "max_steps": 1, "data": [source]}
    return {"output_dir": "unused", "data_root": str(data_root), "stages": [stage], **run}


def build(data_root: Path, tokenizer, kind: str, source: dict, **run: object):
    config = parse_config(stage_config(data_root, kind, source, **run))
    return build_stage_data(config, config.stages[0], tokenizer, Templates(), progress=False)


def clean_documents(data_root: Path, n: int) -> list[str]:
    """MedQuAD answers: real medical text that shares no test content."""
    rows = [row for _, row in read_jsonl(data_root / "medquad" / "medquad.jsonl")][:n]
    return [f"{row['question']}\n{row['answer']}" for row in rows]


def one_line_error(error: pytest.ExceptionInfo[TestSplitError]) -> str:
    text = str(error.value)
    assert "\n" not in text
    assert "leakage: filter" in text  # says what to do
    return text


# --- the index -----------------------------------------------------------------------------------------------------


def test_index_covers_every_test_split_and_is_cached(index: LeakageIndex, data_root: Path) -> None:
    assert index.sizes == {"pubmedqa": 500, "medqa": 1273, "medqa_5options": 1273, "medmcqa": 2816, "mmlu_medical": 1089}
    assert not index.missing
    assert len(index.pmids) == 500 and index.n_sentences > 4000
    assert leakage_index(data_root) is index  # built once per data root
    assert index.seconds < 10


def test_normalise_ignores_case_spacing_and_edge_punctuation() -> None:
    assert normalise("  Is aspirin\n an  ANTICOAGULANT?  ") == normalise("is aspirin an anticoagulant") == "is aspirin an anticoagulant"
    assert normalise("Cystinuria is characterised by –") == "cystinuria is characterised by"


# --- refused ---------------------------------------------------------------------------------------------------------


def test_renamed_copy_of_a_test_file_is_refused(data_root: Path, tmp_path: Path, tokenizer) -> None:
    copy = tmp_path / "x" / "train.jsonl"
    copy.parent.mkdir()
    shutil.copy(data_root / "medqa" / "test.jsonl", copy)
    with pytest.raises(TestSplitError) as error:
        build(data_root, tokenizer, "task", {"type": "mcq_task", "dataset": "medqa", "path": str(copy), "limit": 5})
    text = one_line_error(error)
    assert text.startswith(f"{copy} line 1: the question text equals medqa test question medqa-0 (also in medqa_5options)")
    assert "1273 of 1273 records" in text
    # the other splits too, each under a name that hides it
    for split in ("medqa_5options", "medmcqa", "mmlu_medical"):
        renamed = tmp_path / split / "my_questions.jsonl"
        renamed.parent.mkdir()
        shutil.copy(data_root / split / "test.jsonl", renamed)
        with pytest.raises(TestSplitError, match=f"{split} test question"):
            mcq_training_questions(split, renamed, None, 0, data_root, Guard(leakage_index(data_root)))


def test_one_test_question_among_training_questions_is_refused_with_its_line(data_root: Path, tmp_path: Path) -> None:
    rows = [row for _, row in read_jsonl(data_root / "medqa_train" / "train_subset.jsonl")][:20]
    test_row = next(row for _, row in read_jsonl(data_root / "medqa" / "test.jsonl"))
    pasted = {k: v for k, v in test_row.items() if k != "realidx"} | {"question": test_row["question"].upper() + "  "}
    rows.insert(7, pasted)  # case and spacing do not hide it
    file = write_jsonl(tmp_path / "train.jsonl", rows)
    with pytest.raises(TestSplitError, match=rf"^{file} line 8: the question text equals medqa test question .*1 of 21 records"):
        mcq_training_questions("medqa", file, None, 0, data_root)


def test_text_corpus_with_a_pubmedqa_test_abstract_is_refused(data_root: Path, tmp_path: Path, tokenizer, pubmedqa_test) -> None:
    question = pubmedqa_test[17]
    abstract = question.context.replace("\n", " ")  # pasted without its section breaks, inside a longer document
    docs = clean_documents(data_root, 5)
    docs.insert(2, f"Review of recent findings.\n{abstract}\nSee also the references below.")
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in docs])
    with pytest.raises(TestSplitError) as error:
        build(data_root, tokenizer, "knowledge", {"type": "text", "path": str(corpus)})
    text = one_line_error(error)
    assert text.startswith(f"{corpus} line 3: it contains")
    assert f"of PubMedQA test PMID {question.metadata['pmid']}" in text and "1 of 6 records" in text


def test_txt_file_with_a_medqa_test_question_is_refused_with_its_line(data_root: Path, tmp_path: Path, tokenizer) -> None:
    test_question = load_dataset("medqa", data_root / "medqa")[100]
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n".join(clean_documents(data_root, 3)), encoding="utf-8")
    (folder / "b.txt").write_text("Chapter 4\nPractice case:\n" + test_question.question + "\nDiscuss.\n", encoding="utf-8")
    with pytest.raises(TestSplitError) as error:
        build(data_root, tokenizer, "knowledge", {"type": "text", "path": str(folder / "*.txt")})
    text = one_line_error(error)
    assert text.startswith(f"{folder / 'b.txt'} line 3: it contains medqa test question {test_question.id}")


def test_messages_corpus_with_a_test_question_in_a_user_turn_is_refused(data_root: Path, tmp_path: Path, tokenizer) -> None:
    # a short MedMCQA stem identifies its question only with its options: here both are pasted into the user turn
    short = next(q for q in load_dataset("medmcqa", data_root / "medmcqa", skip_invalid=True) if len(q.question.split()) <= 4)
    options = "\n".join(f"({label.lower()}) {text}" for label, text in short.options.items())
    chat = [
        {"messages": [{"role": "user", "content": "What does aspirin inhibit?"}, {"role": "assistant", "content": "Cyclooxygenase."}]},
        {"messages": [{"role": "system", "content": "You are a tutor."},
                      {"role": "user", "content": f"Quiz time! {short.question}\n{options}\nPick one."},
                      {"role": "assistant", "content": "The answer is (a)."}]},
    ]
    file = write_jsonl(tmp_path / "chat.jsonl", chat)
    with pytest.raises(TestSplitError) as error:
        build(data_root, tokenizer, "instruction", {"type": "messages", "path": str(file)})
    assert one_line_error(error).startswith(f"{file} line 2: it contains medmcqa test question {short.id} with its options")

    mmlu = load_dataset("mmlu_medical", data_root / "mmlu_medical")[-1]  # a long professional-medicine vignette
    chat[1]["messages"][1]["content"] = f"Please help me with this:\n{mmlu.question}"
    write_jsonl(file, chat)
    with pytest.raises(TestSplitError, match=rf"line 2: it contains mmlu_medical test question {mmlu.id}"):
        build(data_root, tokenizer, "instruction", {"type": "messages", "path": str(file)})


def test_pubmedqa_source_whose_test_questions_were_relabelled_is_refused(data_root: Path, tmp_path: Path, pubmedqa_test) -> None:
    """A PubMedQA folder whose test_ground_truth.json leaves out some test PMIDs: its 'train' split then holds test questions."""
    folder = tmp_path / "pubmedqa"
    folder.mkdir()
    shutil.copy(data_root / "pubmedqa" / "ori_pqal.json", folder / "ori_pqal.json")
    truth = json.loads((data_root / "pubmedqa" / "test_ground_truth.json").read_text())
    hidden = pubmedqa_test[3].metadata["pmid"]
    (folder / "test_ground_truth.json").write_text(json.dumps({k: v for k, v in truth.items() if k != hidden}))
    with pytest.raises(TestSplitError, match=rf"PMID {hidden}: PMID {hidden} is in PubMedQA's test split; 1 of 401 records"):
        pubmedqa_train_questions(folder, None, 0, Guard(leakage_index(data_root)))


# --- filter --------------------------------------------------------------------------------------------------------


def test_filter_drops_and_counts_the_leaks(data_root: Path, tmp_path: Path, tokenizer, pubmedqa_test) -> None:
    medqa = load_dataset("medqa", data_root / "medqa")
    docs = clean_documents(data_root, 6)
    docs[1] += "\n" + pubmedqa_abstract(pubmedqa_test[0])
    docs[4] = medqa[5].question + "\n" + docs[4]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in docs])
    source = {"type": "text", "path": str(corpus), "leakage": "filter"}
    data = build(data_root, tokenizer, "knowledge", source)
    assert data.counts["documents"] == 4
    assert data.counts["sources"][0]["dropped_leaking"] == 2 and data.counts["sources"][0]["leakage"] == "filter"
    leakage = data.counts["leakage"]
    assert leakage["dropped"] == 2 and leakage["dropped_by_split"] == {"pubmedqa": 1, "medqa": 1}
    assert leakage["checked"]["medmcqa"] == 2816 and leakage["missing"] == {}
    # the config-wide setting does the same; a source's own `leakage: refuse` wins over it
    assert build(data_root, tokenizer, "knowledge", {"type": "text", "path": str(corpus)}, leakage="filter").counts["documents"] == 4
    with pytest.raises(TestSplitError):
        build(data_root, tokenizer, "knowledge", {**source, "leakage": "refuse"}, leakage="filter")


def test_filter_count_lands_in_run_json(data_root: Path, tmp_path: Path, tiny_model_dir: Path, pubmedqa_test) -> None:
    from finetune.train import run_stage

    docs = [*clean_documents(data_root, 4), pubmedqa_test[1].context]
    corpus = write_jsonl(tmp_path / "corpus.jsonl", [{"text": d} for d in docs])
    raw = stage_config(data_root, "knowledge", {"type": "text", "path": str(corpus)}, leakage="filter")
    raw["stages"][0].update({"method": "full", "max_length": 64, "batch_size": 1, "save_steps": 1, "logging_steps": 1})
    raw.update({"output_dir": str(tmp_path / "out"), "base_model": str(tiny_model_dir)})
    folder = run_stage(parse_config(raw), 0, progress=False)
    record = json.loads((folder / "run.json").read_text())
    assert record["leakage"]["dropped"] == 1 and record["leakage"]["dropped_by_split"] == {"pubmedqa": 1}
    assert record["data"]["sources"][0]["dropped_leaking"] == 1 and record["data"]["documents"] == 4
    assert record["config"]["run"]["leakage"] == "filter"


# --- clean sources pass --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dataset", "file", "n"), [("medqa", "train_subset.jsonl", 1029), ("medqa_5options", "dev.jsonl", 1271)])
def test_medqa_training_files_pass(data_root: Path, dataset: str, file: str, n: int) -> None:
    guard = Guard(leakage_index(data_root), "filter")
    questions = mcq_training_questions(dataset, data_root / "medqa_train" / file, None, 0, data_root, guard)
    assert len(questions) == n and guard.dropped == 0


def test_pubmedqa_non_test_questions_and_abstracts_pass(data_root: Path, index: LeakageIndex, pubmedqa_test) -> None:
    guard = Guard(index, "filter")
    train = pubmedqa_train_questions(data_root / "pubmedqa", None, 0, guard)
    assert len(train) == 400 and guard.dropped == 0  # the training split (dev's 100 never reach training)
    assert not {normalise(q.question) for q in train} & {normalise(q.question) for q in pubmedqa_test}  # different texts
    assert not [q.id for q in train if index.match_text(pubmedqa_abstract(q))]


def test_medquad_sample_passes(data_root: Path, index: LeakageIndex) -> None:
    rows = [row for _, row in read_jsonl(data_root / "medquad" / "medquad.jsonl")]
    sample = random.Random(0).sample(rows, 3000)
    flagged = [row["id"] for row in sample if index.match_text(f"{row['question']}\n{row['answer']}")]
    assert flagged == []


def test_common_phrases_alone_do_not_leak(index: LeakageIndex, data_root: Path, pubmedqa_test) -> None:
    """The thresholds at work: a short stem without its options, or one short abstract sentence, is not a leak; more is."""
    medmcqa = load_dataset("medmcqa", data_root / "medmcqa", skip_invalid=True)
    short = next(q for q in medmcqa if q.question.strip(" :") == "Skeletal muscles")
    assert index.match_text("Skeletal muscles move the bones; smooth muscle lines the gut.") is None
    assert index.match_text(f"{short.question}\n" + "\n".join(short.options.values())) is not None
    assert index.match_text("Additional studies are needed to confirm these findings.") is None  # in a test abstract, and in MedQuAD
    sentences = [s for s in pubmedqa_test[0].context.split(". ") if 8 <= len(s.split()) < 20]
    assert index.match_text(sentences[0] + ".") is None
    assert index.match_text(". ".join(sentences[:2]) + ".") is not None
