"""Token files: tokenized documents as a flat memory-mapped array and their offsets."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tiktoken

from .cache import BOS_TOKEN, ENCODE_THREADS, DataError, cache_replacing
from .sources import iter_texts

# ---------------------------------------------------------------------------------------------
# token files
# ---------------------------------------------------------------------------------------------


def docs_path(tokens_path: Path) -> Path:
    """The int64 document offsets beside a token file: [n_docs + 1], doc i = tokens[o[i]:o[i+1]]."""
    return tokens_path.with_name(tokens_path.stem + ".docs.npy")


def tokenize_shards(enc: tiktoken.Encoding, shards: list[Path], out: Path, log: Callable[[str], None]) -> None:
    """Encode every document of the shards, BOS first, into out (.npy) and its offsets file."""
    if out.exists() and docs_path(out).exists():
        return
    t0 = time.perf_counter()
    dtype = np.uint16 if enc.n_vocab <= 1 << 16 else np.uint32
    bos = enc.encode_single_token(BOS_TOKEN)
    chunks, lengths = [], []
    for texts in iter_texts(shards):
        encoded = enc.encode_ordinary_batch(texts, num_threads=ENCODE_THREADS)
        sizes = [len(ids) + 1 for ids in encoded]
        chunks.append(
            np.fromiter(
                itertools.chain.from_iterable(itertools.chain((bos,), ids) for ids in encoded),
                dtype=dtype,
                count=sum(sizes),
            )
        )
        lengths.extend(sizes)
    if not lengths:
        raise DataError(f"no documents to tokenize in {', '.join(map(str, shards))}; the corpus is empty")
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    save_tokens(out, chunks, offsets)
    log(
        f"data: tokenized {len(lengths):,} documents into {int(offsets[-1]):,} tokens ({out.name}) "
        f"in {time.perf_counter() - t0:.1f} s"
    )


def save_tokens(out: Path, chunks: list[np.ndarray], offsets: np.ndarray) -> None:
    """Write the concatenated token chunks to out (.npy) and the document offsets beside it."""
    with cache_replacing(out) as tmp:
        tokens = np.lib.format.open_memmap(tmp, mode="w+", dtype=chunks[0].dtype, shape=(int(offsets[-1]),))
        np.concatenate(chunks, out=tokens)
        tokens.flush()
        del tokens
    with cache_replacing(docs_path(out)) as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(offsets, dtype=np.int64))


def open_tokens(tokens_path: Path) -> tuple[np.ndarray, list[int], list[int]]:
    """(memory-mapped tokens, document starts, document lengths) of a token file."""
    try:
        tokens = np.load(tokens_path, mmap_mode="r")
        offsets = np.load(docs_path(Path(tokens_path)))
    except FileNotFoundError as e:
        raise DataError(f"missing token file {e.filename}; run `autoresearch-bench prepare TASK`") from None
    return tokens, offsets[:-1].tolist(), np.diff(offsets).tolist()
