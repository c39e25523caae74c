"""Tokenizers: a byte-level BPE trained on the train split, the byte tokenizer, loading them, and
the raw bytes of each token (for bits per byte).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import tiktoken

from .cache import BOS_TOKEN, SPECIAL_TOKENS, SPLIT_PATTERN, TOKENIZER_DOC_CAP, DataError, atomic_write_bytes
from .sources import iter_texts

# ---------------------------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------------------------


def write_byte_tokenizer(tok_dir: Path) -> None:
    """The identity tokenizer on UTF-8 bytes (ids 0..255) plus BOS (256), as a tiktoken.Encoding."""
    enc = tiktoken.Encoding(
        name="ar-bytes",
        pat_str=SPLIT_PATTERN,
        mergeable_ranks={bytes([i]): i for i in range(256)},
        special_tokens={BOS_TOKEN: 256},
    )
    atomic_write_bytes(tok_dir / "tokenizer.pkl", pickle.dumps(enc))


def train_tokenizer(
    shards: list[Path], vocab_size: int, max_chars: int, tok_dir: Path, log: Callable[[str], None]
) -> None:
    """Train a byte-level BPE with rustbpe on the training shards; save it as a tiktoken.Encoding."""
    import rustbpe

    seen = {"docs": 0, "chars": 0}

    def texts() -> Iterator[str]:
        for batch in iter_texts(shards):
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
        raise DataError(
            f"the training text ({seen['chars']:,} characters) yields only {len(ranks)} BPE "
            f"tokens, fewer than vocab_size {vocab_size} needs; lower vocab_size or add text"
        )
    enc = tiktoken.Encoding(
        name=f"ar-bpe-{vocab_size}",
        pat_str=trainer.get_pattern(),
        mergeable_ranks=ranks,
        special_tokens={s: len(ranks) + i for i, s in enumerate(SPECIAL_TOKENS)},
    )
    probe = "Hello world! Numbers: 123. Unicode: 你好 ü\n\tdef f(x): return x"
    assert enc.decode(enc.encode_ordinary(probe)) == probe, "tokenizer round trip failed"
    atomic_write_bytes(tok_dir / "tokenizer.pkl", pickle.dumps(enc))
    log(
        f"data: trained the tokenizer on {seen['docs']:,} documents ({seen['chars']:,} characters) "
        f"in {time.perf_counter() - t0:.1f} s"
    )


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
    return np.array(
        [0 if i in special else len(enc.decode_single_token_bytes(i)) for i in range(enc.n_vocab)], dtype=np.int32
    )
