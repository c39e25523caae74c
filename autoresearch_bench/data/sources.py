"""Documents into parquet shards: the embedded corpus, the machine's own files, a parquet folder and
climbmix (downloaded with retries and Range resume); the validation split by content hash.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import itertools
import json
import lzma
import os
import random
import shutil
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .cache import (
    CACHE_ENV,
    CORPUS_SEED,
    DOWNLOAD_CHUNK,
    DOWNLOAD_WORKERS,
    EMBEDDED_CORPUS,
    ENCODE_BATCH_DOCS,
    ROW_GROUP_DOCS,
    SHARD_CHARS,
    DataError,
    atomic_write_bytes,
    cache_replacing,
)

# ---------------------------------------------------------------------------------------------
# sources → parquet shards
# ---------------------------------------------------------------------------------------------


def build_shards(data: dict, root: Path, log: Callable[[str], None]) -> tuple[list[Path], Path]:
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
    atomic_write_bytes(manifest, json.dumps(names).encode())
    log(
        f"data: wrote {len(train):,} train and {len(val):,} validation documents ({sum(map(len, train)):,} "
        f"and {sum(map(len, val)):,} characters) in {time.perf_counter() - t0:.1f} s"
    )
    return [root / "shards" / n for n in names], root / "val" / "val.parquet"


def _first_chars(docs: list[str], max_chars: int | None) -> list[str]:
    """The first documents up to max_chars characters (the one that crosses it included); all if None."""
    if not max_chars:
        return docs
    total = itertools.accumulate(len(d) for d in docs)
    return [d for d, n in zip(docs, total) if n - len(d) < max_chars]


def existing_shards(data: dict) -> tuple[list[Path], Path]:
    """A folder of parquet shards with a `text` column (e.g. autoresearch's own ~/.cache/autoresearch/data):
    every shard but `val_shard` trains. Lets a comparison with upstream use the very same documents."""
    folder = Path(data["dir"] or "").expanduser()
    val = folder / data["val_shard"]
    train = sorted(p for p in folder.glob("*.parquet") if p.name != val.name)
    if not data["dir"] or not val.is_file() or not train:
        raise DataError(
            f'source = "parquet" needs dir = a folder with parquet shards and the validation '
            f"shard {data['val_shard']!r}; {folder} has {len(train)} train shards"
            f"{'' if val.is_file() else ' and no validation shard'}"
        )
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
                    if not (stat.S_ISREG(st.st_mode) and data["min_bytes"] <= st.st_size <= data["max_bytes"]):
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
        raise DataError(
            f"no text files ({', '.join(sorted(extensions))}, {data['min_bytes']}-"
            f"{data['max_bytes']} bytes) found under {', '.join(map(str, data['paths']))}; "
            f'set [data] paths or use source = "embedded"'
        )
    log(f"data: read {len(docs):,} distinct files in {time.perf_counter() - t0:.1f} s")
    return docs


def _split(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val): val is the round(val_fraction·n) documents (≥ 1) with the smallest content hash."""
    if len(docs) < 2:
        raise DataError(
            f"the corpus has {len(docs)} non-empty document(s); it needs at least 2 "
            f"(one for training, one for validation): add text or change the source"
        )
    n_val = min(len(docs) - 1, max(1, round(val_fraction * len(docs))))
    keys = [hashlib.blake2b(d.encode(), digest_size=8).digest() for d in docs]
    val_ids = set(sorted(range(len(docs)), key=keys.__getitem__)[:n_val])
    return ([d for i, d in enumerate(docs) if i not in val_ids], [d for i, d in enumerate(docs) if i in val_ids])


def _write_parquet(path: Path, docs: list[str]) -> None:
    with cache_replacing(path) as tmp:
        pq.write_table(pa.table({"text": pa.array(docs, pa.large_string())}), tmp, row_group_size=ROW_GROUP_DOCS)


def download_climbmix(data: dict, runtime: dict, root: Path, log: Callable[[str], None]) -> tuple[list[Path], Path]:
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
            futures = [
                pool.submit(_download, f"{data['base_url'].rstrip('/')}/{p.name}", p, runtime, log) for p in missing
            ]
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
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=headers), timeout=runtime["timeout_s"]
            ) as resp:
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
    raise DataError(f'cannot download {url}: {reason}; check network or use source = "files"/"embedded"')


def iter_texts(shards: Iterable[Path]) -> Iterator[list[str]]:
    """Batches of documents of the given parquet shards, in order."""
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=ENCODE_BATCH_DOCS, columns=["text"]):
            yield batch.column(0).to_pylist()
