"""Data and tokenizer: corpus shards, a BPE tokenizer, token files, and the batch loaders.

`prepare(spec, task)` turns a task profile's [data] table into files under
cache_root()/<task>/<hash of the spec>/, each step skipped when its output already exists:

    shards/*.parquet       training documents (a `text` column, as autoresearch's climbmix shards)
    val/*.parquet          the pinned validation documents, never used for training
    tokenizer/tokenizer.pkl  a tiktoken.Encoding (byte-level BPE trained with rustbpe on train only)
    train.npy, train.docs.npy          all training documents tokenized, each prefixed by BOS,
    private/validation.npy, .docs.npy  all validation documents likewise (flat uint16/uint32 array +
                                       int64 document offsets): the source of both scored splits
    splits/val-KEY.npz     the validation rows an experiment is scored on (rows and scored mask)
    private/test-KEY.npz   the league's held-out rows, apart (eval_split; KEY: seq_len, tokens, crop, score)
    prepared.json          written last: counts and ids; its presence means the cache is complete

Held-out rows apart. The league ranks agents on rows that no experiment is scored on: the rows that
follow the validation rows in the packing of the validation documents. `eval_split` cuts both once
per setting into files of their own, and a run's scorer is handed only the file of its split, so an
experiment's ScorerSpec never names the held-out rows. The cache holds secrets besides: val/ (the
validation text), splits/ (the validation rows) and private/ (the documents both splits come from, the
held-out rows) are mode 0700, their files 0600, readable by the harness's user alone, and no sandbox shows the cache at all
(sandbox.py); so neither an agent command (uid 65534, or a user namespace that does not mount it)
nor a candidate's model process can open them. During the league's final scoring a model process
necessarily receives the held-out rows' input tokens, batch by batch through shared memory, never
their targets: it runs sandboxed with no network and no writable storage that outlives the run (its
/scratch and /tmp go with it), so it has nowhere to keep them. Caches of layout 1 (val/val.npy) are
moved into this layout in place on first use, with a message; their data ids do not change.

Choices:
- Sources. `embedded` (the KJV shipped in the package, one chapter per document), `files` (text
  files of the machine's own /usr and /opt trees, walked in sorted order, deduplicated, shuffled with
  a fixed seed) and `climbmix` (autoresearch's parquet shards, downloaded with urllib, retries with
  exponential backoff, HTTP Range resume, atomic rename). For the first two, the validation split is
  the fraction of documents with the smallest content hash, so it depends on the documents only.
  For climbmix it is the pinned last shard, as upstream. `parquet` reads a folder of existing
  shards (autoresearch's layout) with a named validation shard, for comparisons on the same documents.
- `modular` generates its data instead of reading text: every equation `a op b = c (mod modulus)`
  is one document [BOS, a, op, b, =, c] of its own vocabulary (residues 0..p-1, then op, =, BOS:
  vocab_size = modulus + 3); a permutation from `seed` puts round(train_fraction · n) equations in
  the train split and the rest in the validation split. Its tokenizer file is a tiktoken.Encoding
  that decodes these ids (residues as numbers, op and = as special tokens), never used to encode.
- Tokenizers. `tokenizer = "bpe"` (default) trains a byte-level BPE of vocab_size tokens;
  `tokenizer = "bytes"` is the identity on UTF-8 bytes (ids 0..255, BOS 256, vocab_size = 257), saved
  as a tiktoken.Encoding with mergeable_ranks {bytes([i]): i}, so token_bytes and bpb work unchanged.
  `max_train_chars` keeps only the first documents of the (shuffled) train split up to that many
  characters, after the split: the validation split stays that of the whole corpus.
- Scored positions. The packer marks where each piece starts (a BOS) and where a document ends;
  `eval_rows_and_mask` turns the marks into a bool mask over the targets per the runtime key
  `score`: "tokens" (default) scores every target but BOS; "answers" scores only the last token of
  each document (the c of a modular equation, the answer of any prompt-answer document).
- Everything is written to a temporary file and renamed into place (os.replace), so an interrupted
  run never leaves a file a later run trusts; a file lock serialises concurrent preparers.
- The tokenizer is stored as a pickled tiktoken.Encoding (as upstream). tiktoken's own text format
  needs `blobfile` to write and caches reads by path in /tmp, which would serve stale tokenizers.
- token_bytes counts the raw bytes of each token (tiktoken's decode_single_token_bytes), so bytes
  sum exactly to the UTF-8 length of the text even for tokens that split a multi-byte character.
- Tokenizing once into memory-mapped arrays keeps the loader cheap: it copies slices, never encodes.
  The loader packs like autoresearch's (every row starts with BOS; best fit from a buffer of
  documents; crop only when nothing fits), except that a cropped document's rest is kept (see _Packer;
  `crop = true` in [data] restores upstream's dropping, for comparisons with it). The feeder process
  serves the rows (RowStream); the trainer's ctx copies them to the GPU (context.py).
"""
from __future__ import annotations

import bisect
import errno
import fcntl
import hashlib
import http.client
import itertools
import json
import lzma
import math
import os
import pickle
import random
import shutil
import stat
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
import contextlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tiktoken

from . import files

FORMAT_VERSION = 1  # bump when the cache layout or the preparation changes: old caches are ignored
CACHE_ENV = "AR_CACHE_DIR"
EMBEDDED_CORPUS = Path(__file__).parent / "corpus" / "kjv.txt.xz"
CLIMBMIX_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
CLIMBMIX_VAL_SHARD = 6542  # upstream's pinned validation shard (the last one)

# GPT-4-style split, with \p{N}{1,2} instead of {1,3}, as autoresearch
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*"""
                 r"""|\s*[\r\n]|\s+(?!\S)|\s+""")
BOS_TOKEN = "<|bos|>"
SPECIAL_TOKENS = (BOS_TOKEN, "<|reserved_1|>", "<|reserved_2|>", "<|reserved_3|>")

# [data] keys per source with their defaults; all of these (and nothing else) name the cache
COMMON_KEYS = {"vocab_size": None, "tokenizer": "bpe", "tokenizer_max_chars": 200_000_000}
SOURCE_KEYS = {
    "embedded": {"val_fraction": 0.2, "max_chars": None, "max_train_chars": None},
    "files": {"paths": ["/usr", "/opt"],
              "extensions": [".py", ".pyi", ".md", ".rst", ".txt", ".h", ".hpp", ".c", ".cc", ".cpp",
                             ".cu", ".cuh"],
              "min_bytes": 200, "max_bytes": 2_000_000, "max_chars": None, "max_train_chars": None,
              "val_fraction": 0.01},
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
RUNTIME_KEYS = {"seq_len": None, "retries": 5, "backoff_s": 1.0, "timeout_s": 30.0, "crop": False,
                "score": "tokens"}

CORPUS_SEED = 0                 # shuffle of the files corpus
SHARD_CHARS = 100_000_000       # characters per parquet shard built from documents
ROW_GROUP_DOCS = 1024           # documents per parquet row group
TOKENIZER_DOC_CAP = 10_000      # characters of one document the tokenizer trainer sees (as upstream)
ENCODE_BATCH_DOCS = 1024        # documents per encode_ordinary_batch call
ENCODE_THREADS = os.cpu_count() or 1
DOWNLOAD_WORKERS = 8
DOWNLOAD_CHUNK = 1 << 20
DOC_BUFFER = 1000               # documents the packer chooses from (as upstream)


class DataError(Exception):
    """Data cannot be prepared or read; the message says what to do."""


@dataclass(frozen=True)
class PreparedData:
    root: Path            # cache folder of this data spec
    train_tokens: Path    # train split token file (flat stream, every document prefixed by BOS)
    val_tokens: Path      # all validation documents tokenized (private/: both splits come from it)
    tokenizer_dir: Path   # tokenizer files
    vocab_size: int
    bos_id: int
    n_train_tokens: int
    n_val_tokens: int
    raw_paths: tuple[str, ...] = ()  # where the source text lies (validation included): closed to training
    data_id: str = ""     # hash of the validation tokens and the tokenizer: what a score is measured on


def cache_root() -> Path:
    """$AR_CACHE_DIR if set, else $XDG_CACHE_HOME (or ~/.cache) / autoresearch-bench."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "autoresearch-bench"


# ---------------------------------------------------------------------------------------------
# prepare
# ---------------------------------------------------------------------------------------------

def prepare(spec: dict, task_name: str, log: Callable[[str], None] = print) -> PreparedData:
    """Build (or find in the cache) the shards, tokenizer and token files of a [data] table."""
    data, runtime = _normalize(spec)
    named = {k: v for k, v in data.items() if not (k in LATER_KEYS and v == LATER_KEYS[k])}
    digest = hashlib.sha256(json.dumps({"format": FORMAT_VERSION, **named}, sort_keys=True).encode())
    root = cache_root() / task_name / digest.hexdigest()[:12]
    if prepared := _read_prepared(root, log):
        return prepared
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data cache {root}: {e.strerror}; set {CACHE_ENV}") from None
    with _locked(root, log):
        if prepared := _read_prepared(root, log):  # another process finished it while we waited
            return prepared
        t0 = time.perf_counter()
        log(f"data: preparing {data['source']} data for {task_name} in {root}")
        _atomic_write_bytes(root / "spec.json", json.dumps(data, indent=2, sort_keys=True).encode())
        tok_dir = root / "tokenizer"
        if data["source"] == "modular":
            _write_modular(data, root, log)
        else:
            if data["source"] == "climbmix":
                train_shards, val_shard = _download_climbmix(data, runtime, root, log)
            elif data["source"] == "parquet":
                train_shards, val_shard = _existing_shards(data)
            else:
                train_shards, val_shard = _build_shards(data, root, log)
            if data["tokenizer"] == "bytes":
                _write_byte_tokenizer(tok_dir)
            elif not (tok_dir / "tokenizer.pkl").exists():
                _train_tokenizer(train_shards, data["vocab_size"], data["tokenizer_max_chars"], tok_dir, log)
            enc = load_tokenizer(tok_dir)
            _tokenize(enc, train_shards, root / "train.npy", log)
            _tokenize(enc, [val_shard], root / VALIDATION_DOCS, log)
        enc = load_tokenizer(tok_dir)
        _close_private(root)
        meta = {"vocab_size": enc.n_vocab, "bos_id": enc.encode_single_token(BOS_TOKEN),
                "n_train_tokens": len(np.load(root / "train.npy", mmap_mode="r")),
                "n_val_tokens": len(np.load(root / VALIDATION_DOCS, mmap_mode="r")),
                "raw_paths": [str(root / "shards"), str(root / "val")] +
                             ([str(Path(data["dir"]).expanduser().resolve())] if data["source"] == "parquet" else [])}
        _atomic_write_bytes(root / "prepared.json", json.dumps(meta, indent=2).encode())
        log(f"data: ready in {time.perf_counter() - t0:.1f} s: {meta['n_train_tokens']:,} train and "
            f"{meta['n_val_tokens']:,} validation tokens, vocab {meta['vocab_size']}")
    return _read_prepared(root)


def validation_copies(prepared: PreparedData, roots: Iterable[str], log: Callable[[str], None] = print) -> list[str]:
    """Files under roots (what a sandbox shows: the system and Python folders) whose bytes equal a
    validation document: a corpus of the machine's own files (source "files", or parquet shards built
    from them, as the offline h100 corpus of /usr and /opt) lies readable beside the candidate. They
    cannot be hidden (the Python installation is among them: on the H200, ctypes/__init__.py was a
    validation document), so records count them and --ar-sandbox strict refuses such data.
    Computed once per data spec (val/visible_copies.json)."""
    cache = prepared.root / "val" / "visible_copies.json"
    if cache.exists():
        return json.loads(cache.read_text())
    spec = json.loads((prepared.root / "spec.json").read_text())
    shard = {"files": prepared.root / "val" / "val.parquet",
             "parquet": Path(spec.get("dir", ".")).expanduser() / str(spec.get("val_shard"))}.get(spec["source"])
    found: list[str] = []
    if shard is not None and shard.exists():
        t0 = time.perf_counter()
        raw = [text.encode() for batch in _iter_texts([shard]) for text in batch]
        docs = {hashlib.blake2b(b, digest_size=16).digest() for b in raw}
        sizes = {len(b) for b in raw}
        for top in roots:
            for dirpath, _, filenames in os.walk(top):
                for name in filenames:
                    path = os.path.join(dirpath, name)
                    try:
                        st = os.lstat(path)
                        if not stat.S_ISREG(st.st_mode) or st.st_size not in sizes:
                            continue
                        with open(path, "rb") as f:
                            if hashlib.blake2b(f.read(), digest_size=16).digest() in docs:
                                found.append(path)
                    except OSError:
                        continue
        if found:
            log(f"data: warning: {len(found):,} files that candidate code can read (system and Python folders) "
                f"hold validation documents, e.g. {found[0]}: this corpus is not secret from candidates "
                f"({time.perf_counter() - t0:.1f} s, once)")
    _atomic_write_bytes(cache, json.dumps(sorted(set(found))).encode())
    return sorted(set(found))


def _normalize(spec: dict) -> tuple[dict, dict]:
    """Split a [data] table into the keys that define the data (defaults filled) and runtime keys."""
    source = spec.get("source")
    if source not in SOURCE_KEYS:
        raise DataError(f"unknown data source {source!r}; set source to one of {', '.join(SOURCE_KEYS)}")
    common = {k: v for k, v in COMMON_KEYS.items() if source != "modular" or k not in TEXT_ONLY_KEYS}
    defaults = {**common, **SOURCE_KEYS[source]}
    unknown = set(spec) - set(defaults) - set(RUNTIME_KEYS) - {"source"}
    if unknown:
        raise DataError(f"unknown [data] keys {sorted(unknown)} for source {source!r}; "
                        f"allowed: {sorted({*defaults, *RUNTIME_KEYS})}")
    data = {"source": source, **{k: spec.get(k, v) for k, v in defaults.items()}}
    runtime = {k: spec.get(k, v) for k, v in RUNTIME_KEYS.items()}
    if runtime["score"] not in SCORE_MODES:
        raise DataError(f"score must be one of {', '.join(SCORE_MODES)}, not {runtime['score']!r}")
    vocab = data["vocab_size"]
    if source == "modular":
        _check_modular(data)
    elif data["tokenizer"] not in TOKENIZERS:
        raise DataError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, not {data['tokenizer']!r}")
    elif data["tokenizer"] == "bytes" and vocab != 257:
        raise DataError(f"tokenizer = \"bytes\" has 257 tokens (256 bytes + BOS); set vocab_size = 257, not {vocab!r}")
    elif data["tokenizer"] == "bpe" and (not isinstance(vocab, int) or vocab < 256 + len(SPECIAL_TOKENS) + 1):
        raise DataError(f"vocab_size must be an integer of at least {256 + len(SPECIAL_TOKENS) + 1} "
                        f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens + merges), not {vocab!r}")
    if "val_fraction" in data and not 0 < data["val_fraction"] < 1:
        raise DataError(f"val_fraction must be between 0 and 1, not {data['val_fraction']!r}")
    return data, runtime


def _read_prepared(root: Path, log: Callable[[str], None] = print) -> PreparedData | None:
    """The PreparedData of a complete cache folder, or None when anything is missing; a complete
    folder of layout 1 is moved into this layout first."""
    paths = [root / "prepared.json", root / "train.npy", root / "train.docs.npy",
             root / VALIDATION_DOCS, _docs_path(root / VALIDATION_DOCS), root / "tokenizer" / "tokenizer.pkl"]
    old = root / "val" / "val.npy"
    if (root / "prepared.json").exists() and old.exists() and _docs_path(old).exists() and not paths[3].exists():
        log(f"data: moving {root}'s validation documents to private/ (cache layout 2: the league's held-out rows "
            f"apart from the validation rows); the data id stays")
        (root / "private").mkdir(exist_ok=True)
        with contextlib.suppress(FileNotFoundError):  # another process moved them meanwhile
            os.replace(_docs_path(old), paths[4])
            os.replace(old, paths[3])
        _close_private(root)
    if not all(p.exists() for p in paths):
        return None
    meta = json.loads(paths[0].read_text())
    meta["raw_paths"] = tuple(meta.get("raw_paths", ()))
    return PreparedData(root=root, train_tokens=paths[1], val_tokens=paths[3], tokenizer_dir=paths[5].parent,
                        data_id=_data_id(paths[3], paths[4], paths[5].parent), **meta)


def _close_private(root: Path) -> None:
    """val/, splits/ and private/ (and what they hold) readable by this user alone."""
    for folder in (root / "val", root / "splits", root / "private"):
        with contextlib.suppress(OSError):  # a cache of another user's: theirs to close
            folder.chmod(0o700)
            for path in folder.iterdir():
                path.chmod(0o600)


def eval_split(prepared: PreparedData, n_tokens: int, seq_len: int, crop: bool = False, score: str = "tokens",
               split: str = "val") -> Path:
    """The file of a split's scored rows (rows and mask, as eval_rows_and_mask gives them): "val", the
    first n_tokens of the validation documents, packed, what experiments are scored on; "test", up to as
    many rows again right after them, held out for the league (at least a quarter as many, else
    ValueError). Both are cut on first use of a setting; the test file lies in private/."""
    if split not in SPLITS:
        raise DataError(f"eval_split must be one of {', '.join(SPLITS)}, not {split!r}")
    key = f"{seq_len}-{n_tokens}-{'crop' if crop else 'keep'}-{score}"
    files = {"val": prepared.root / "splits" / f"val-{key}.npz", "test": prepared.root / "private" / f"test-{key}.npz"}
    if not files[split].exists():
        rows, mask = eval_rows_and_mask(prepared.val_tokens, 2 * n_tokens, seq_len, crop, score)
        n_val = math.ceil(n_tokens / seq_len)  # the packer fills rows in order: these are the n_tokens rows
        for name, part in (("val", slice(0, n_val)), ("test", slice(n_val, None))):
            files[name].parent.mkdir(exist_ok=True)
            with _atomic(files[name]) as tmp, open(tmp, "wb") as f:
                np.savez(f, rows=rows[part], mask=mask[part])
        _close_private(prepared.root)
    if split == "test":
        n_val, held = math.ceil(n_tokens / seq_len), len(np.load(files["test"])["rows"])
        if held < max(1, n_val // 4):
            raise ValueError(f"the validation split has {held} rows after the {n_val} scored ones, too few for a "
                             f"held-out test; lower eval_tokens or raise val_fraction in [data]")
    return files[split]


def _data_id(val_tokens: Path, val_docs: Path, tokenizer_dir: Path) -> str:
    """12 hex digits of SHA-256 over the validation tokens, their document bounds and the bytes of
    every token: all a score depends on besides the model. Two runs' scores compare only where it is
    equal: the same data spec can give other validation text on another machine (a `files` or
    `parquet` source that saw one file more) or another tokenizer."""
    digest = hashlib.sha256()
    for array in (np.load(val_tokens), np.load(val_docs), token_bytes(tokenizer_dir)):
        digest.update(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return digest.hexdigest()[:12]


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
def _atomic(path: Path):
    """files.replacing, with a full disk said as a DataError that names the cache."""
    try:
        with files.replacing(path) as tmp:
            yield tmp
    except OSError as e:
        if e.errno == errno.ENOSPC or "No space left" in str(e):
            raise DataError(f"disk full while writing {path}; free space or set {CACHE_ENV}") from None
        raise


def _atomic_write_bytes(path: Path, content: bytes) -> None:
    with _atomic(path) as tmp:
        tmp.write_bytes(content)


# ---------------------------------------------------------------------------------------------
# sources → parquet shards
# ---------------------------------------------------------------------------------------------

def _build_shards(data: dict, root: Path, log: Callable[[str], None]) -> tuple[list[Path], Path]:
    """Write the embedded or files corpus as train shards and a pinned val shard (once)."""
    manifest = root / "shards" / "manifest.json"
    if manifest.exists():
        names = json.loads(manifest.read_text())
        return [root / "shards" / n for n in names], root / "val" / "val.parquet"
    t0 = time.perf_counter()
    docs = _embedded_docs() if data["source"] == "embedded" else _file_docs(data, log)
    random.Random(CORPUS_SEED).shuffle(docs)
    docs = _first_chars(docs, data["max_chars"])
    train, val = _split(docs, data["val_fraction"])
    train = _first_chars(train, data["max_train_chars"])
    _write_parquet(root / "val" / "val.parquet", val)
    names, shard, chars = [], [], 0
    for i, doc in enumerate(train, 1):
        shard.append(doc)
        chars += len(doc)
        if chars >= SHARD_CHARS or i == len(train):
            names.append(f"train_{len(names):05d}.parquet")
            _write_parquet(root / "shards" / names[-1], shard)
            shard, chars = [], 0
    _atomic_write_bytes(manifest, json.dumps(names).encode())
    log(f"data: wrote {len(train):,} train and {len(val):,} validation documents ({sum(map(len, train)):,} "
        f"and {sum(map(len, val)):,} characters) in {time.perf_counter() - t0:.1f} s")
    return [root / "shards" / n for n in names], root / "val" / "val.parquet"


def _first_chars(docs: list[str], max_chars: int | None) -> list[str]:
    """The first documents up to max_chars characters (the one that crosses it included); all if None."""
    if not max_chars:
        return docs
    total = itertools.accumulate(len(d) for d in docs)
    return [d for d, n in zip(docs, total) if n - len(d) < max_chars]


def _existing_shards(data: dict) -> tuple[list[Path], Path]:
    """A folder of parquet shards with a `text` column (e.g. autoresearch's own ~/.cache/autoresearch/data):
    every shard but `val_shard` trains. Lets a comparison with upstream use the very same documents."""
    folder = Path(data["dir"] or "").expanduser()
    val = folder / data["val_shard"]
    train = sorted(p for p in folder.glob("*.parquet") if p.name != val.name)
    if not data["dir"] or not val.is_file() or not train:
        raise DataError(f"source = \"parquet\" needs dir = a folder with parquet shards and the validation "
                        f"shard {data['val_shard']!r}; {folder} has {len(train)} train shards"
                        f"{'' if val.is_file() else ' and no validation shard'}")
    return train, val


def _embedded_docs() -> list[str]:
    with lzma.open(EMBEDDED_CORPUS, "rt", encoding="utf-8") as f:
        return [d for d in f.read().split("\f") if d.strip()]


def _file_docs(data: dict, log: Callable[[str], None]) -> list[str]:
    """UTF-8 text files under data['paths'], in sorted order, no symlinks, deduplicated by content."""
    extensions = {e if e.startswith(".") else f".{e}" for e in data["extensions"]}
    docs, seen, t0 = [], set(), time.perf_counter()
    for top in data["paths"]:
        for dirpath, dirnames, filenames in os.walk(top):  # does not descend into symlinked folders
            dirnames.sort()
            for name in sorted(filenames):
                if os.path.splitext(name)[1] not in extensions:
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    if not (stat.S_ISREG(st.st_mode)
                            and data["min_bytes"] <= st.st_size <= data["max_bytes"]):
                        continue
                    with open(path, "rb") as f:
                        raw = f.read()
                    text = raw.decode("utf-8")
                except (OSError, UnicodeDecodeError):
                    continue
                key = hashlib.blake2b(raw, digest_size=16).digest()
                if key not in seen:
                    seen.add(key)
                    docs.append(text)
                    if len(docs) % 10_000 == 0:
                        log(f"data: read {len(docs):,} files ({time.perf_counter() - t0:.0f} s)")
    if not docs:
        raise DataError(f"no text files ({', '.join(sorted(extensions))}, {data['min_bytes']}-"
                        f"{data['max_bytes']} bytes) found under {', '.join(map(str, data['paths']))}; "
                        f"set [data] paths or use source = \"embedded\"")
    log(f"data: read {len(docs):,} distinct files in {time.perf_counter() - t0:.1f} s")
    return docs


def _split(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): val is the round(val_fraction·n) documents (≥ 1) with the smallest content hash."""
    if len(docs) < 2:
        raise DataError(f"the corpus has {len(docs)} non-empty document(s); it needs at least 2 "
                        f"(one for training, one for validation): add text or change the source")
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    keys = [hashlib.blake2b(d.encode(), digest_size=8).digest() for d in docs]
    val_ids = set(sorted(range(len(docs)), key=keys.__getitem__)[:n_val])
    return ([d for i, d in enumerate(docs) if i not in val_ids],
            [d for i, d in enumerate(docs) if i in val_ids])


def _write_parquet(path: Path, docs: list[str]) -> None:
    with _atomic(path) as tmp:
        pq.write_table(pa.table({"text": pa.array(docs, pa.large_string())}), tmp,
                       row_group_size=ROW_GROUP_DOCS)


def _download_climbmix(data: dict, runtime: dict, root: Path,
                       log: Callable[[str], None]) -> tuple[list[Path], Path]:
    """Download train shards 0..num_shards-1 into shards/ and the pinned val shard into val/."""
    train_ids = [i for i in range(data["num_shards"]) if i != data["val_shard"]]
    wanted = [root / "shards" / f"shard_{i:05d}.parquet" for i in train_ids]
    wanted.append(root / "val" / f"shard_{data['val_shard']:05d}.parquet")
    missing = [p for p in wanted if not p.exists()]
    if missing:
        t0 = time.perf_counter()
        log(f"data: downloading {len(missing)} climbmix shards from {data['base_url']}")
        for p in missing:
            p.parent.mkdir(parents=True, exist_ok=True)
        # Every shard gets its attempts even when another fails (Executor.map would cancel the queued
        # ones at the first error): what each got so far stays as .part, for the next run to resume.
        with ThreadPoolExecutor(min(DOWNLOAD_WORKERS, len(missing))) as pool:
            futures = [pool.submit(_download, f"{data['base_url'].rstrip('/')}/{p.name}", p, runtime, log)
                       for p in missing]
        for future in futures:
            future.result()  # the first shard's error, after all have finished
        log(f"data: downloaded {len(missing)} shards in {time.perf_counter() - t0:.1f} s")
    return wanted[:-1], wanted[-1]


def _download(url: str, dest: Path, runtime: dict, log: Callable[[str], None]) -> None:
    """Fetch url to dest: retries with exponential backoff, Range resume of dest.part, atomic rename."""
    part = dest.with_name(dest.name + ".part")
    reason = "no attempt made"
    for attempt in range(1, runtime["retries"] + 1):
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "autoresearch-bench", **({"Range": f"bytes={have}-"} if have else {})}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                        timeout=runtime["timeout_s"]) as resp:
                resumed = bool(have) and resp.status == 206  # a server that ignores Range sends it all
                length = resp.headers.get("Content-Length")
                with open(part, "ab" if resumed else "wb") as f:
                    shutil.copyfileobj(resp, f, DOWNLOAD_CHUNK)
            got = part.stat().st_size - (have if resumed else 0)
            if length is not None and got != int(length):  # urllib returns short reads silently
                raise http.client.IncompleteRead(b"", int(length) - got)
            pq.read_metadata(part)  # a whole parquet file, not an error page
            os.replace(part, dest)
            if attempt > 1:
                log(f"data: downloaded {dest.name} on attempt {attempt}")
            return
        except urllib.error.HTTPError as e:
            reason = f"HTTP {e.code} {e.reason}"
            if e.code == 416:  # our partial file does not fit the server's: start over
                part.unlink(missing_ok=True)
            elif 400 <= e.code < 500:  # not found, forbidden: retrying will not help
                break
        except urllib.error.URLError as e:
            reason = str(e.reason)
        except http.client.IncompleteRead as e:
            reason = f"connection dropped with {e.expected:,} bytes to go"
        except (http.client.HTTPException, pa.ArrowException) as e:
            reason = f"{type(e).__name__}: {e}"
            if isinstance(e, pa.ArrowException):
                part.unlink(missing_ok=True)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise DataError(f"disk full while writing {part}; free space or set {CACHE_ENV}") from None
            reason = str(e)
        log(f"data: {dest.name}: attempt {attempt}/{runtime['retries']} failed: {reason}")
        if attempt < runtime["retries"]:
            time.sleep(runtime["backoff_s"] * 2 ** (attempt - 1))
    raise DataError(f"cannot download {url}: {reason}; check network or use source = \"files\"/\"embedded\"")


def _iter_texts(shards: Iterable[Path]) -> Iterator[list[str]]:
    """Batches of documents of the given parquet shards, in order."""
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=ENCODE_BATCH_DOCS, columns=["text"]):
            yield batch.column(0).to_pylist()


# ---------------------------------------------------------------------------------------------
# modular arithmetic: generated data
# ---------------------------------------------------------------------------------------------

def _check_modular(data: dict) -> None:
    p, op, frac = data["modulus"], data["operation"], data["train_fraction"]
    if not isinstance(p, int) or not 2 <= p <= 4096:
        raise DataError(f"modulus must be an integer from 2 to 4096, not {p!r}")
    if op not in MODULAR_OPS:
        raise DataError(f"operation must be one of {' '.join(MODULAR_OPS)}, not {op!r}")
    if op == "/" and any(p % d == 0 for d in range(2, math.isqrt(p) + 1)):
        raise DataError(f"operation \"/\" needs a prime modulus (every b ≠ 0 invertible); {p} is not prime")
    if not 0 < frac < 1:
        raise DataError(f"train_fraction must be between 0 and 1, not {frac!r}")
    if data["vocab_size"] != p + 3:
        raise DataError(f"source = \"modular\" has modulus + 3 tokens (residues, op, =, BOS); "
                        f"set vocab_size = {p + 3}, not {data['vocab_size']!r}")


def modular_equations(modulus: int, operation: str, train_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) int64 [n, 6] rows BOS a op b = c, every pair (a, b) once (b ≠ 0 for "/"), split by a
    permutation from seed: round(train_fraction · n) rows train, the rest validate."""
    p = modulus
    a, b = (g.ravel() for g in np.meshgrid(np.arange(p), np.arange(int(operation == "/"), p), indexing="ij"))
    if operation == "/":
        c = a * np.array([pow(int(x), p - 2, p) for x in b]) % p  # Fermat: b^(p-2) is b's inverse
    else:
        c = {"+": a + b, "-": a - b, "*": a * b}[operation] % p
    op_id, eq_id, bos_id = p, p + 1, p + 2
    rows = np.stack([np.full_like(a, bos_id), a, np.full_like(a, op_id), b, np.full_like(a, eq_id), c], axis=1)
    rows = rows[np.random.default_rng(seed).permutation(len(rows))]
    n_train = min(len(rows) - 1, max(1, round(train_fraction * len(rows))))
    return rows[:n_train], rows[n_train:]


def _write_modular(data: dict, root: Path, log: Callable[[str], None]) -> None:
    """The modular source's decoding tokenizer and its train and val token files."""
    p, op = data["modulus"], data["operation"]
    enc = tiktoken.Encoding(name=f"ar-modular-{p}", pat_str=r"\d+",
                            mergeable_ranks={str(i).encode(): i for i in range(p)},
                            special_tokens={f" {op} ": p, " = ": p + 1, BOS_TOKEN: p + 2})
    _atomic_write_bytes(root / "tokenizer" / "tokenizer.pkl", pickle.dumps(enc))
    train, val = modular_equations(p, op, data["train_fraction"], data["seed"])
    for rows, out in ((train, root / "train.npy"), (val, root / VALIDATION_DOCS)):
        _save_tokens(out, [rows.astype(np.uint16).ravel()], np.arange(0, rows.size + 1, rows.shape[1]))
    log(f"data: generated {len(train):,} train and {len(val):,} validation equations a {op} b mod {p}")


# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------

def _write_byte_tokenizer(tok_dir: Path) -> None:
    """The identity tokenizer on UTF-8 bytes (ids 0..255) plus BOS (256), as a tiktoken.Encoding."""
    enc = tiktoken.Encoding(name="ar-bytes", pat_str=SPLIT_PATTERN, mergeable_ranks={bytes([i]): i for i in range(256)},
                            special_tokens={BOS_TOKEN: 256})
    _atomic_write_bytes(tok_dir / "tokenizer.pkl", pickle.dumps(enc))


def _train_tokenizer(shards: list[Path], vocab_size: int, max_chars: int, tok_dir: Path,
                     log: Callable[[str], None]) -> None:
    """Train a byte-level BPE with rustbpe on the training shards; save it as a tiktoken.Encoding."""
    import rustbpe

    seen = {"docs": 0, "chars": 0}

    def texts() -> Iterator[str]:
        for batch in _iter_texts(shards):
            for doc in batch:
                doc = doc[:TOKENIZER_DOC_CAP]
                seen["docs"] += 1
                seen["chars"] += len(doc)
                yield doc
                if seen["chars"] >= max_chars:
                    return

    t0 = time.perf_counter()
    log(f"data: training a {vocab_size}-token BPE tokenizer on at most {max_chars:,} characters")
    trainer = rustbpe.Tokenizer()
    trainer.train_from_iterator(texts(), vocab_size - len(SPECIAL_TOKENS), pattern=SPLIT_PATTERN)
    ranks = {bytes(k): v for k, v in trainer.get_mergeable_ranks()}
    if len(ranks) + len(SPECIAL_TOKENS) != vocab_size:
        raise DataError(f"the training text ({seen['chars']:,} characters) yields only {len(ranks)} BPE "
                        f"tokens, fewer than vocab_size {vocab_size} needs; lower vocab_size or add text")
    enc = tiktoken.Encoding(name=f"ar-bpe-{vocab_size}", pat_str=trainer.get_pattern(), mergeable_ranks=ranks,
                            special_tokens={s: len(ranks) + i for i, s in enumerate(SPECIAL_TOKENS)})
    probe = "Hello world! Numbers: 123. Unicode: 你好 ü\n\tdef f(x): return x"
    assert enc.decode(enc.encode_ordinary(probe)) == probe, "tokenizer round trip failed"
    _atomic_write_bytes(tok_dir / "tokenizer.pkl", pickle.dumps(enc))
    log(f"data: trained the tokenizer on {seen['docs']:,} documents ({seen['chars']:,} characters) "
        f"in {time.perf_counter() - t0:.1f} s")


def load_tokenizer(tokenizer_dir: Path) -> tiktoken.Encoding:
    """The tiktoken.Encoding saved by prepare()."""
    path = Path(tokenizer_dir) / "tokenizer.pkl"
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except FileNotFoundError:
        raise DataError(f"no tokenizer at {path}; run `autoresearch-bench prepare TASK` first") from None


def token_bytes(tokenizer_dir: Path) -> np.ndarray:
    """int32 [vocab_size]: the number of bytes each token stands for; 0 for special tokens."""
    enc = load_tokenizer(tokenizer_dir)
    special = {enc.encode_single_token(s) for s in enc.special_tokens_set}
    return np.array([0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)],
                    dtype=np.int32)


# ---------------------------------------------------------------------------------------------
# token files
# ---------------------------------------------------------------------------------------------

def _docs_path(tokens_path: Path) -> Path:
    """The int64 document offsets beside a token file: [n_docs + 1], doc i = tokens[o[i]:o[i+1]]."""
    return tokens_path.with_name(tokens_path.stem + ".docs.npy")


def _tokenize(enc: tiktoken.Encoding, shards: list[Path], out: Path, log: Callable[[str], None]) -> None:
    """Encode every document of the shards, BOS first, into out (.npy) and its offsets file."""
    if out.exists() and _docs_path(out).exists():
        return
    t0 = time.perf_counter()
    dtype = np.uint16 if enc.n_vocab <= 1 << 16 else np.uint32
    bos = enc.encode_single_token(BOS_TOKEN)
    chunks, lengths = [], []
    for texts in _iter_texts(shards):
        encoded = enc.encode_ordinary_batch(texts, num_threads=ENCODE_THREADS)
        sizes = [len(ids) + 1 for ids in encoded]
        chunks.append(np.fromiter(itertools.chain.from_iterable(itertools.chain((bos,), ids) for ids in encoded),
                                  dtype=dtype, count=sum(sizes)))
        lengths.extend(sizes)
    if not lengths:
        raise DataError(f"no documents to tokenize in {', '.join(map(str, shards))}; the corpus is empty")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    _save_tokens(out, chunks, offsets)
    log(f"data: tokenized {len(lengths):,} documents into {int(offsets[-1]):,} tokens ({out.name}) "
        f"in {time.perf_counter() - t0:.1f} s")


def _save_tokens(out: Path, chunks: list[np.ndarray], offsets: np.ndarray) -> None:
    """Write the concatenated token chunks to out (.npy) and the document offsets beside it."""
    with _atomic(out) as tmp:
        tokens = np.lib.format.open_memmap(tmp, mode="w+", dtype=chunks[0].dtype, shape=(int(offsets[-1]),))
        np.concatenate(chunks, out=tokens)
        tokens.flush()
        del tokens
    with _atomic(_docs_path(out)) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(offsets, dtype=np.int64))


def _open_tokens(tokens_path: Path) -> tuple[np.ndarray, list[int], list[int]]:
    """(memory-mapped tokens, document starts, document lengths) of a token file."""
    try:
        tokens = np.load(tokens_path, mmap_mode="r")
        offsets = np.load(_docs_path(Path(tokens_path)))
    except FileNotFoundError as e:
        raise DataError(f"missing token file {e.filename}; run `autoresearch-bench prepare TASK`") from None
    return tokens, offsets[:-1].tolist(), np.diff(offsets).tolist()


# ---------------------------------------------------------------------------------------------
# packing and loaders
# ---------------------------------------------------------------------------------------------

class _Packer:
    """BOS-aligned best-fit packing of documents (in `order`) into rows of a fixed length.

    Each row starts with BOS. The largest buffered piece that fits the space left is placed whole;
    when none fits, the shortest one is cropped to fill the row and its rest goes back into the
    buffer as a new piece behind a BOS of its own. Upstream drops the rest instead; on corpora of
    long documents (source files, book chapters) that threw away most of the text and starved the
    validation split, so no token is dropped here. A piece is (length, document, offset): offset 0
    is the document with its own leading BOS; offset k > 0 is BOS + the document from token k on.
    """

    def __init__(self, tokens: np.ndarray, starts: list[int], lengths: list[int], order: Iterator[int],
                 crop: bool = False):
        self.tokens, self.starts, self.lengths, self.order = tokens, starts, lengths, order
        self.crop = crop  # upstream's behaviour: a cropped document's rest is dropped
        # A buffer holding the whole corpus would make best fit ignore the shuffled order (every seed
        # the same batches); an eighth of a small corpus keeps the order random.
        self.size = min(DOC_BUFFER, max(8, len(starts) // 8))
        self.buffer: list[tuple[int, int, int]] = []  # (piece length, document, offset), sorted

    def fill(self, rows: np.ndarray, marks: np.ndarray | None = None) -> int:
        """Fill rows [R, L] in place; return how many rows were completed (< R once order runs out).
        marks (int8 [R, L], zeros), if given, gets START where a piece begins and END where a document ends."""
        buffer, width = self.buffer, rows.shape[1]
        for r in range(len(rows)):
            pos = 0
            while pos < width:
                while len(buffer) < self.size and (doc := next(self.order, None)) is not None:
                    bisect.insort(buffer, (self.lengths[doc], doc, 0))
                if not buffer:
                    return r
                space = width - pos
                i = bisect.bisect_right(buffer, (space, sys.maxsize, sys.maxsize)) - 1
                length, doc, offset = buffer.pop(max(i, 0))
                take = length if i >= 0 else space
                start = self.starts[doc]
                if offset == 0:
                    rows[r, pos:pos + take] = self.tokens[start:start + take]
                    used = take
                else:
                    rows[r, pos] = self.tokens[start]  # the document's BOS
                    rows[r, pos + 1:pos + take] = self.tokens[start + offset:start + offset + take - 1]
                    used = offset + take - 1
                if used < self.lengths[doc] and not self.crop:
                    bisect.insort(buffer, (1 + self.lengths[doc] - used, doc, used))
                if marks is not None:
                    marks[r, pos] |= START
                    marks[r, pos + take - 1] |= END if used == self.lengths[doc] else 0
                pos += take
        return len(rows)


def _epochs(n_docs: int, seed: int) -> Iterator[int]:
    """Document indices, a fresh random permutation per epoch, forever."""
    rng = np.random.default_rng(seed)
    while True:
        yield from rng.permutation(n_docs).tolist()


class RowStream:
    """Infinite int32 rows [batch_size, seq_len + 1] of a token file, packed BOS-aligned with best fit
    from a shuffled document stream (reshuffled each epoch, from `seed`); a row's inputs are
    row[:-1] and its targets row[1:]. The same array is refilled on each step (copy to keep one).
    The feeder (feeder.py) serves training batches from it."""

    def __init__(self, tokens_path: Path, batch_size: int, seq_len: int, seed: int = 0, crop: bool = False):
        self.tokens, self.starts, self.lengths = _open_tokens(Path(tokens_path))
        self.shape, self.seed, self.crop = (batch_size, seq_len + 1), seed, crop

    def __iter__(self) -> Iterator[np.ndarray]:
        packer = _Packer(self.tokens, self.starts, self.lengths, _epochs(len(self.starts), self.seed), self.crop)
        rows = np.empty(self.shape, dtype=np.int32)
        while True:
            packer.fill(rows)
            yield rows


def eval_rows_and_mask(tokens_path: Path, n_tokens: int, seq_len: int, crop: bool = False,
                       score: str = "tokens") -> tuple[np.ndarray, np.ndarray]:
    """The scored rows [N, seq_len + 1] and a bool mask [N, seq_len] of the targets rows[:, 1:] that are scored: every one but
    BOS (score "tokens"), or only the last token of each document (score "answers")."""
    if score not in SCORE_MODES:
        raise DataError(f"score must be one of {', '.join(SCORE_MODES)}, not {score!r}")
    tokens, starts, lengths = _open_tokens(Path(tokens_path))
    rows = np.empty((math.ceil(n_tokens / seq_len), seq_len + 1), dtype=np.int64)
    marks = np.zeros(rows.shape, dtype=np.int8)
    n = _Packer(tokens, starts, lengths, iter(range(len(starts))), crop).fill(rows, marks)
    if n == 0:
        raise ValueError(f"{tokens_path} holds {len(tokens):,} tokens, too few for one evaluation row of "
                         f"{seq_len + 1}; lower seq_len or raise val_fraction in [data]")
    target = marks[:n, 1:]
    mask = (target & START) == 0
    if score == "answers":
        mask &= (target & END) != 0
    return rows[:n], mask
