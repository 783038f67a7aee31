"""What a benchmark run keeps on disk: one JSONL record per (dataset, strategy, question), and the run fingerprint.

Durability rules, so that an interrupted run (Ctrl-C, kill -9, crash, full disk) loses nothing already answered:
- records are appended, a chunk at a time, with one `write` on an O_APPEND file followed by `fsync`;
- a write that fails half-way (full disk) is cut back to the last complete line before the error is raised;
- a kill during a write can leave a torn last line (bytes without a final newline): `RecordStore.load` drops it;
- the latest record of a (dataset, strategy, question) wins, so a question that failed earlier is recomputed and
  its new record supersedes the error record (an error does not replace a success made from the same prompt);
- a resumed run reuses a record only when its `prompt_hash` equals the current run's hash of that question's prompts;
- small metadata files (fingerprint.json, run.json, reports) are written to a temporary file and renamed.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import logging
import os
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from voc.types import OrderingAnswer, SampleAnswer

log = logging.getLogger(__name__)

RECORDS_FILE = "records.jsonl"
FINGERPRINT_FILE = "fingerprint.json"
RUN_FILE = "run.json"


class BenchError(ValueError):
    """A benchmark problem the user can fix (wrong folder, bad option, corrupt file); the message says how."""


class RecordsWriteError(BenchError):
    """Results could not be written (for example a full disk); the records file was left intact."""


class VerificationRecord(BaseModel):
    """The VoC verification of one option, as stored."""

    text: str
    verdict_probability: float | None = None  # None when the final rule ran no verdict round


class ResultRecord(BaseModel):
    """One (dataset, strategy, question) result. `error` is set, and `label` None, when the question failed."""

    model_config = ConfigDict(extra="ignore")

    question_id: str
    dataset: str
    strategy: str
    subject: str | None = Field(default=None, description="MMLU subject (None for other datasets)")
    labels: list[str] = Field(description="option labels in the order shown to the model")
    gold: str | None = None
    label: str | None = Field(default=None, description="chosen option label; None when the question failed")
    correct: bool | None = None
    probabilities: dict[str, float] = Field(default_factory=dict)
    choice_logprobs: dict[str, float] = Field(default_factory=dict)
    verifications: dict[str, VerificationRecord] = Field(default_factory=dict)
    completions: list[str] = Field(default_factory=list)
    rounds: list[str] = Field(default_factory=list, description="the strategy rounds computed (voc: verify, verdict, choose)")
    orderings: list[OrderingAnswer] = Field(
        default_factory=list,
        description="--permutations: each option ordering's chosen original label and probabilities (identity first); "
        "`label` and `probabilities` are then their ensemble, the other fields the identity ordering's",
    )
    samples: list[SampleAnswer] = Field(
        default_factory=list,
        description="--samples N: each self-consistency path's choice, probabilities and texts; `probabilities` are then their mean",
    )
    majority: str | None = Field(default=None, description="--samples N: the majority vote of the paths' choices")
    fewshot: list[str] = Field(default_factory=list, description="--fewshot K: ids of the pool questions shown as worked examples")
    prompt_hash: str = Field(default="", description="sha256 of the rendered first-round prompt(s); checked when a run resumes")
    duplicate_options: list[list[str]] = Field(
        default_factory=list, description="labels of options with the same text (the question is kept and flagged)"
    )
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_truncated: bool = False
    seconds: float = Field(default=0.0, description="this question's share of its chunk's wall time")
    round_seconds: dict[str, float] = Field(default_factory=dict, description="its share of each strategy round's time")
    error: str | None = None
    attempts: int = 1
    chunk: int = 0
    session: str = ""
    record_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = Field(default_factory=lambda: now_iso())

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dataset, self.strategy, self.question_id)

    @property
    def ok(self) -> bool:
        return self.error is None and self.label is not None


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def aside_stamp() -> str:
    """The time part of a set-aside records file's name, e.g. 20261125T101500."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")


class RunFingerprint(BaseModel):
    """Everything that decides the results of a run; a changed fingerprint means the old records are not comparable.

    `model` identifies the model by content (voc.models.model_fingerprint), so moving a model folder keeps the
    fingerprint and re-training into the same folder changes it. Fields added after the first release have defaults,
    so that an older fingerprint.json is read and reported as a changed configuration rather than as a broken file.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="sha256 of the model's files, or the hub id / served name where they are not local")
    engine: str
    engine_options: dict[str, Any] = Field(default_factory=dict)
    datasets: list[str]
    questions: dict[str, str] = Field(description="dataset -> hash of the selected questions' ids and contents")
    limit: int | None
    seed: int
    params: dict[str, Any]
    templates_hash: str
    final_rule: str
    choose_prompt: str = "full"
    verification_tokens: int | None = None
    voc_version: str = ""
    chunk_size: int | None = Field(default=None, description="questions per strategy call (batch composition)")
    permutations: int = Field(default=1, description="option orderings asked per question (1: the given order only)")
    samples: int = Field(default=1, description="self-consistency paths per question (1: one path)")
    fewshot: int = Field(default=0, description="worked examples per question from the few-shot pool (0: none)")
    fewshot_pool: str | None = Field(default=None, description="the few-shot pool as given (a dataset name or a file)")
    fewshot_pool_hash: str | None = Field(default=None, description="hash of the pool questions' ids, contents and gold labels")

    def differences(self, other: RunFingerprint) -> list[str]:
        """Names of the fields that differ, e.g. ['params', 'templates_hash']."""
        mine, theirs = self.model_dump(), other.model_dump()
        return [name for name in mine if mine[name] != theirs.get(name)]


# --- small files --------------------------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in `folder` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write a whole file through a temporary file and a rename: readers see the old file or the new one."""
    path = Path(path)
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise RecordsWriteError(
                f"could not write {path} ({_reason(exc)}); the files written before are intact: "
                "free space (or fix the problem) and re-run the same command"
            ) from exc
        raise
    fsync_dir(path.parent)


def _reason(exc: OSError) -> str:
    return "the disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BenchError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno}); delete it or use another --out folder") from None
    if not isinstance(data, dict):
        raise BenchError(f"{path} should hold a JSON object; delete it or use another --out folder")
    return data


# --- the records file ---------------------------------------------------------------------------------------


class RecordStore:
    """The append-only JSONL file of a run's results."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.dropped_bytes = 0  # size of the torn last line dropped by the last `load`

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self, repair: bool = True) -> list[ResultRecord]:
        """All complete records, in file order.

        Trailing bytes after the last newline are a line torn by an interrupted write: they are dropped (and, with
        `repair`, cut off the file so that the next append starts on a fresh line). A complete line that is not a
        valid record raises BenchError naming the line; nothing is changed then.
        """
        self.dropped_bytes = 0
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1  # 0 when there is no complete line
        if end < len(data):
            self.dropped_bytes = len(data) - end
            log.warning("%s: dropped a torn last line (%d bytes) left by an interrupted write", self.path, self.dropped_bytes)
            if repair:
                self._truncate(end)
        records: list[ResultRecord] = []
        for number, raw in enumerate(data[:end].split(b"\n")[:-1], start=1):
            if not raw.strip():
                continue
            try:
                records.append(ResultRecord.model_validate_json(raw))
            except ValidationError as exc:
                reason = exc.errors()[0].get("msg", "invalid record")
                raise BenchError(
                    f"{self.path} line {number} is not a valid result record ({reason}); "
                    "fix or delete that line (or move the file aside) and re-run"
                ) from None
        return records

    def _truncate(self, size: int) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, records: Sequence[ResultRecord]) -> None:
        """Append records durably: one write, then fsync. On failure the file is cut back to where it was."""
        if not records:
            return
        payload = b"".join(r.model_dump_json().encode() + b"\n" for r in records)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            before = os.fstat(fd).st_size
            try:
                self._write_all(fd, payload)
                os.fsync(fd)
            except OSError as exc:
                try:  # leave no partial line behind
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                except OSError:
                    pass  # the torn tail is then dropped by the next load
                raise RecordsWriteError(
                    f"could not write results to {self.path} ({_reason(exc)}); the records written before are intact: "
                    "free space (or fix the problem) and re-run the same command to resume"
                ) from exc
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)

    @staticmethod
    def _write_all(fd: int, payload: bytes) -> None:
        view = memoryview(payload)
        while view:
            written = os.write(fd, view)
            view = view[written:]


def latest_by_key(records: Iterable[ResultRecord]) -> dict[tuple[str, str, str], ResultRecord]:
    """The last record of each (dataset, strategy, question). A success is not replaced by a later error from the same
    prompt (a transient failure of a re-run), but is by anything made from another prompt (it was stale)."""
    latest: dict[tuple[str, str, str], ResultRecord] = {}
    for record in records:
        previous = latest.get(record.key)
        if previous is not None and previous.ok and not record.ok and previous.prompt_hash == record.prompt_hash:
            continue
        latest[record.key] = record
    return latest


# --- the run folder -----------------------------------------------------------------------------------------


class RunFolder:
    """An output folder: records.jsonl, fingerprint.json, run.json and the report files."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.records = RecordStore(self.path / RECORDS_FILE)

    @property
    def fingerprint_path(self) -> Path:
        return self.path / FINGERPRINT_FILE

    def read_fingerprint(self) -> RunFingerprint | None:
        if not self.fingerprint_path.is_file():
            return None
        try:
            return RunFingerprint.model_validate(read_json(self.fingerprint_path))
        except ValidationError:
            raise BenchError(
                f"{self.fingerprint_path} was not written by this version of voc bench; use a new --out folder or pass --force"
            ) from None

    def claim(self, fingerprint: RunFingerprint, force: bool = False) -> bool:
        """Make this folder the home of a run with `fingerprint`; True when earlier records may be resumed.

        A folder holding another configuration's results is refused (BenchError), unless `force`: then its
        records are moved aside to records.<time>.jsonl, or records.<time>.<n>.jsonl when that name is taken
        (never deleted, never overwritten), and the run starts afresh.
        """
        if self.path.exists() and not self.path.is_dir():
            raise BenchError(f"--out {self.path} is a file; give a folder")
        existing = self.read_fingerprint() if self.path.is_dir() else None
        if existing is None and self.records.exists():
            if not force:
                raise BenchError(
                    f"{self.path} holds {RECORDS_FILE} but no {FINGERPRINT_FILE}, so it cannot be resumed safely; "
                    "use a new --out folder or pass --force (the old records are kept aside)"
                )
            self._set_aside()
        elif existing is not None and existing != fingerprint:
            changed = ", ".join(existing.differences(fingerprint))
            if not force:
                raise BenchError(
                    f"{self.path} holds a run with another configuration (changed: {changed}); "
                    "use a new --out folder, or pass --force to start it afresh (the old records are kept aside)"
                )
            self._set_aside()
            existing = None
        self.path.mkdir(parents=True, exist_ok=True)
        if existing is None:
            write_atomic(self.fingerprint_path, fingerprint.model_dump_json(indent=2) + "\n")
            return False
        return True

    def _set_aside(self) -> None:
        if self.records.exists():
            target = self.aside_path()
            os.replace(self.records.path, target)
            fsync_dir(self.path)
            log.warning("moved the records of the earlier configuration to %s", target)

    def aside_path(self) -> Path:
        """A free name for set-aside records: records.<UTC time to the second>.jsonl, then .1, .2, ... in that second."""
        stamp = aside_stamp()
        target, n = self.path / f"records.{stamp}.jsonl", 0
        while target.exists():
            n += 1
            target = self.path / f"records.{stamp}.{n}.jsonl"
        return target

    def read_run_info(self) -> dict[str, Any]:
        path = self.path / RUN_FILE
        return read_json(path) if path.is_file() else {}

    def write_run_info(self, info: dict[str, Any]) -> None:
        write_atomic(self.path / RUN_FILE, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
