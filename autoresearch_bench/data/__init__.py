"""Data and tokenizer: corpus shards, a BPE tokenizer, token files, and the batch loaders (a package, one job a module).

    cache     where prepared data lives: the spec's keys, the cache root, locks, atomic writes
    pipeline  prepare(spec, task): the steps below, each skipped when done; the scored splits
    sources   documents into parquet shards: embedded, files, parquet, climbmix (the downloader)
    modular   generated modular-arithmetic equations
    tokenizer BPE training, the byte tokenizer, loading, token_bytes
    tokens    tokenized documents as memory-mapped token files
    packing   rows from token files: the packer, RowStream, the scored rows and their mask

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
held-out rows) are mode 0700, their files 0600, readable by the harness's user alone, and no sandbox shows the
cache at all
(sandbox.py); so neither an agent command (an unprivileged uid, or a user namespace that does not mount it)
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

from .cache import (
    BOS_TOKEN,
    CACHE_ENV,
    CLIMBMIX_URL,
    CLIMBMIX_VAL_SHARD,
    COMMON_KEYS,
    CORPUS_SEED,
    DOC_BUFFER,
    DOWNLOAD_CHUNK,
    DOWNLOAD_WORKERS,
    EMBEDDED_CORPUS,
    ENCODE_BATCH_DOCS,
    ENCODE_THREADS,
    END,
    FORMAT_VERSION,
    LATER_KEYS,
    MODULAR_OPS,
    ROW_GROUP_DOCS,
    RUNTIME_KEYS,
    SCORE_MODES,
    SHARD_CHARS,
    SOURCE_KEYS,
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    SPLITS,
    START,
    TEXT_ONLY_KEYS,
    TOKENIZER_DOC_CAP,
    TOKENIZERS,
    VALIDATION_DOCS,
    DataError,
    PreparedData,
    cache_root,
)
from .modular import modular_equations
from .packing import RowStream, eval_rows_and_mask
from .pipeline import eval_split, prepare, validation_copies
from .tokenizer import load_tokenizer, token_bytes

__all__ = [
    "BOS_TOKEN",
    "CACHE_ENV",
    "CLIMBMIX_URL",
    "CLIMBMIX_VAL_SHARD",
    "COMMON_KEYS",
    "CORPUS_SEED",
    "DOC_BUFFER",
    "DOWNLOAD_CHUNK",
    "DOWNLOAD_WORKERS",
    "EMBEDDED_CORPUS",
    "ENCODE_BATCH_DOCS",
    "ENCODE_THREADS",
    "END",
    "FORMAT_VERSION",
    "LATER_KEYS",
    "MODULAR_OPS",
    "ROW_GROUP_DOCS",
    "RUNTIME_KEYS",
    "SCORE_MODES",
    "SHARD_CHARS",
    "SOURCE_KEYS",
    "SPECIAL_TOKENS",
    "SPLIT_PATTERN",
    "SPLITS",
    "START",
    "TEXT_ONLY_KEYS",
    "TOKENIZER_DOC_CAP",
    "TOKENIZERS",
    "VALIDATION_DOCS",
    "DataError",
    "PreparedData",
    "cache_root",
    "modular_equations",
    "RowStream",
    "eval_rows_and_mask",
    "eval_split",
    "prepare",
    "validation_copies",
    "load_tokenizer",
    "token_bytes",
]
