"""Rows from token files: the best-fit packer, the training loader (RowStream) and the scored rows
with their mask.
"""

from __future__ import annotations

import bisect
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .cache import DOC_BUFFER, END, SCORE_MODES, START, DataError
from .tokens import open_tokens

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

    def __init__(
        self, tokens: np.ndarray, starts: list[int], lengths: list[int], order: Iterator[int], crop: bool = False
    ):
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
                    rows[r, pos : pos + take] = self.tokens[start : start + take]
                    used = take
                else:
                    rows[r, pos] = self.tokens[start]  # the document's BOS
                    rows[r, pos + 1 : pos + take] = self.tokens[start + offset : start + offset + take - 1]
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
        self.tokens, self.starts, self.lengths = open_tokens(Path(tokens_path))
        self.shape, self.seed, self.crop = (batch_size, seq_len + 1), seed, crop

    def __iter__(self) -> Iterator[np.ndarray]:
        packer = _Packer(self.tokens, self.starts, self.lengths, _epochs(len(self.starts), self.seed), self.crop)
        rows = np.empty(self.shape, dtype=np.int32)
        while True:
            packer.fill(rows)
            yield rows


def eval_rows_and_mask(
    tokens_path: Path, n_tokens: int, seq_len: int, crop: bool = False, score: str = "tokens"
) -> tuple[np.ndarray, np.ndarray]:
    """The scored rows [N, seq_len + 1] and a bool mask [N, seq_len] of the targets rows[:, 1:] that are
    scored: every one but BOS (score "tokens"), or only the last token of each document (score "answers")."""
    if score not in SCORE_MODES:
        raise DataError(f"score must be one of {', '.join(SCORE_MODES)}, not {score!r}")
    tokens, starts, lengths = open_tokens(Path(tokens_path))
    rows = np.empty((math.ceil(n_tokens / seq_len), seq_len + 1), dtype=np.int64)
    marks = np.zeros(rows.shape, dtype=np.int8)
    n = _Packer(tokens, starts, lengths, iter(range(len(starts))), crop).fill(rows, marks)
    if n == 0:
        raise ValueError(
            f"{tokens_path} holds {len(tokens):,} tokens, too few for one evaluation row of "
            f"{seq_len + 1}; lower seq_len or raise val_fraction in [data]"
        )
    target = marks[:n, 1:]
    mask = (target & START) == 0
    if score == "answers":
        mask &= (target & END) != 0
    return rows[:n], mask
