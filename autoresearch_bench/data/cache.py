"""Where prepared data lives and how it is written: the [data] spec's keys and constants, the cache
root, a lock per folder and atomic writes.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .. import files

FORMAT_VERSION = 1  # bump when the cache layout or the preparation changes: old caches are ignored
CACHE_ENV = "AR_CACHE_DIR"
EMBEDDED_CORPUS = Path(__file__).parent.parent / "corpus" / "kjv.txt.xz"
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542  # upstream's pinned validation shard (the last one)

# GPT-4-style split, with \p{N}{1,2} instead of {1,3}, as autoresearch
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
    r"""|\s*[\r\n]|\s+(?!\S)|\s+"""
)
BOS_TOKEN = "<|bos|>"
SPECIAL_TOKENS = (BOS_TOKEN, "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>")

# [data] keys per source with their defaults; all of these (and nothing else) name the cache
COMMON_KEYS = {"vocab_size": None, "tokenizer": "bpe", "tokenizer_max_chars": 200_000_000}
SOURCE_KEYS = {
    "embedded": {"val_fraction": 0.2, "max_chars": None, "max_train_chars": None},
    "files": {
        "paths": ["/usr", "/opt"],
        "extensions": [".py", ".pyi", ".md", ".rst", ".txt", ".h", ".hpp", ".c", ".cc", ".cpp", ".cu", ".cuh"],
        "min_bytes": 200,
        "max_bytes": 2_000_000,
        "max_chars": None,
        "max_train_chars": None,
        "val_fraction": 0.01,
    },
    "climbmix": {"num_shards": 10, "base_url": CLIMBMIX_URL, "val_shard": CLIMBMIX_VAL_SHARD},
    "parquet": {"dir": None, "val_shard": f"shard_{CLIMBMIX_VAL_SHARD:05d}.parquet"},
    "modular": {"modulus": 97, "operation": "+", "train_fraction": 0.5, "seed": 0},
}
TEXT_ONLY_KEYS = ("tokenizer", "tokenizer_max_chars")  # COMMON_KEYS that a generated source has not
# Keys added after caches existed: left out of the cache's name at their default, so old caches stay valid
LATER_KEYS = {"tokenizer": "bpe", "max_train_chars": None}
TOKENIZERS = ("bpe", "bytes")
MODULAR_OPS = ("+", "-", "*", "/")
SCORE_MODES = ("tokens", "answers")
SPLITS = ("val", "test")  # what a run is scored on: the validation rows, or the league's held-out rows
VALIDATION_DOCS = "private/validation.npy"  # under a cache folder: both splits' documents, tokenized
START, END = 1, 2  # packer marks: a piece starts here (its BOS); a document ends here
# keys that do not change the prepared data (download behaviour; seq_len belongs to the loader)
RUNTIME_KEYS = {"seq_len": None, "retries": 5, "backoff_s": 1.0, "timeout_s": 30.0, "crop": False, "score": "tokens"}

CORPUS_SEED = 0  # shuffle of the files corpus
SHARD_CHARS = 100_000_000  # characters per parquet shard built from documents
ROW_GROUP_DOCS = 1024  # documents per parquet row group
TOKENIZER_DOC_CAP = 10_000  # characters of one document the tokenizer trainer sees (as upstream)
ENCODE_BATCH_DOCS = 1024  # documents per encode_ordinary_batch call
ENCODE_THREADS = os.cpu_count() or 1
DOWNLOAD_WORKERS = 8
DOWNLOAD_CHUNK = 1 << 20
DOC_BUFFER = 1000  # documents the packer chooses from (as upstream)


class DataError(Exception):
    """Data cannot be prepared or read; the message says what to do."""


@dataclass(frozen=True)
class PreparedData:
    root: Path  # cache folder of this data spec
    train_tokens: Path  # train split token file (flat stream, every document prefixed by BOS)
    val_tokens: Path  # all validation documents tokenized (private/: both splits come from it)
    tokenizer_dir: Path  # tokenizer files
    vocab_size: int
    bos_id: int
    n_train_tokens: int
    n_val_tokens: int
    raw_paths: tuple[str, ...] = ()  # where the source text lies (validation included): closed to training
    data_id: str = ""  # hash of the validation tokens and the tokenizer: what a score is measured on


def cache_root() -> Path:
    """$AR_CACHE_DIR if set, else $XDG_CACHE_HOME (or ~/.cache) / autoresearch-bench."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoresearch-bench"


@contextmanager
def _locked(root: Path, log: Callable[[str], None]):
    """Hold an exclusive lock on root, so concurrent preparers (xdist workers) build once."""
    with open(root / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"data: waiting for another process that prepares {root}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


@contextmanager
def cache_replacing(path: Path):
    """files.replacing, with a full disk said as a DataError that names the cache."""
    try:
        with files.replacing(path) as tmp:
            yield tmp
    except OSError as e:
        if e.errno == errno.ENOSPC or "No space left" in str(e):
            raise DataError(f"disk full while writing {path}; free space or set {CACHE_ENV}") from None
        raise


def atomic_write_bytes(path: Path, content: bytes) -> None:
    with cache_replacing(path) as tmp:
        tmp.write_bytes(content)
