"""Data module: sources, cache, tokenizer, token files, packing loaders, downloads (local server)."""

from __future__ import annotations

import errno
import http.server
import io
import lzma
import math
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoresearch_bench import data
from autoresearch_bench.data import DataError, PreparedData, RowStream, eval_rows_and_mask, load_tokenizer, prepare

EMBEDDED = {"source": "embedded", "vocab_size": 384, "seq_len": 64, "max_chars": 400_000}
CHAPTERS = lzma.open(data.EMBEDDED_CORPUS, "rt", encoding="utf-8").read().split("\f")


def eval_rows(tokens_path: Path, n_tokens: int, seq_len: int, crop: bool = False) -> np.ndarray:
    """The scored rows of a split, without their mask."""
    return eval_rows_and_mask(tokens_path, n_tokens, seq_len, crop)[0]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("AR_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def embedded(tmp_path_factory) -> PreparedData:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AR_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        return prepare(EMBEDDED, "tiny", log=lambda m: None)


def texts(path: Path) -> list[str]:
    return pq.read_table(path).column("text").to_pylist()


def docs_of(tokens_path: Path) -> list[np.ndarray]:
    tokens = np.load(tokens_path)
    offsets = np.load(tokens_path.with_name(tokens_path.stem + ".docs.npy"))
    return [tokens[a:b] for a, b in zip(offsets[:-1], offsets[1:])]


def write_token_file(folder: Path, lengths: list[int]) -> Path:
    """A token file whose token at flat position p is p, so a row shows where each token came from."""
    path = folder / "t.npy"
    np.save(path, np.arange(sum(lengths), dtype=np.uint32))
    np.save(folder / "t.docs.npy", np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    return path


# --------------------------------------------------------------------------------------- cache, spec


def test_cache_root_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("AR_CACHE_DIR", str(tmp_path / "a"))
    assert data.cache_root() == tmp_path / "a"
    monkeypatch.delenv("AR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.cache_root() == tmp_path / "xdg" / "autoresearch-bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_root() == Path.home() / ".cache" / "autoresearch-bench"


@pytest.mark.parametrize(
    "spec, message",
    [
        ({"source": "hub", "vocab_size": 512}, "unknown data source 'hub'"),
        ({"source": "files", "vocab_size": 512, "path": ["/usr"]}, r"unknown \[data\] keys \['path'\]"),
        ({"source": "embedded", "vocab_size": 100}, "vocab_size must be an integer of at least 261"),
        ({"source": "embedded", "vocab_size": 512, "val_fraction": 1.5}, "val_fraction must be between 0 and 1"),
    ],
)
def test_bad_spec_is_a_one_line_data_error(cache, spec, message):
    with pytest.raises(DataError, match=message) as e:
        prepare(spec, "t", log=lambda m: None)
    assert "\n" not in str(e.value)


def test_validation_documents_and_held_out_rows_are_the_harness_s_alone(cache):
    prepared = prepare(EMBEDDED, "tiny", log=lambda m: None)
    held_out, scored = data.eval_split(prepared, 4096, 64, split="test"), data.eval_split(prepared, 4096, 64)
    assert held_out.parent == prepared.root / "private" and scored.parent == prepared.root / "splits"
    for path in (prepared.val_tokens, held_out, scored, prepared.root / "val" / "val.parquet"):
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700, path
    with pytest.raises(DataError, match="eval_split must be one of val, test"):
        data.eval_split(prepared, 4096, 64, split="heldout")


def test_a_cache_of_layout_1_is_moved_into_place_with_a_message_and_keeps_its_data_id(cache):
    prepared = prepare(EMBEDDED, "tiny", log=lambda m: None)
    old = prepared.root / "val" / "val.npy"  # where layout 1 kept the validation tokens
    os.replace(prepared.val_tokens, old)
    os.replace(prepared.val_tokens.with_name("validation.docs.npy"), prepared.root / "val" / "val.docs.npy")
    logs = []
    again = prepare(EMBEDDED, "tiny", log=logs.append)
    assert again == prepared and not old.exists()
    assert len(logs) == 1 and "cache layout 2" in logs[0] and "the data id stays" in logs[0]


def test_embedded_prepare_is_cached_and_idempotent(cache):
    logs = []
    first = prepare(EMBEDDED, "tiny", log=logs.append)
    assert first.root.parent == cache / "tiny"
    assert first.val_tokens.parent == first.root / "private" and first.train_tokens.parent == first.root
    assert first.vocab_size == 384 and first.n_train_tokens == len(np.load(first.train_tokens))
    assert first.n_val_tokens == len(np.load(first.val_tokens)) > 0
    assert any("tokenizer" in m for m in logs) and any("tokenized" in m for m in logs)
    files = {p: p.stat().st_mtime_ns for p in first.root.rglob("*") if p.is_file()}

    logs.clear()
    assert prepare(EMBEDDED, "tiny", log=logs.append) == first
    assert prepare({**EMBEDDED, "seq_len": 128}, "tiny", log=logs.append) == first  # seq_len: loader only
    assert logs == []
    assert {p: p.stat().st_mtime_ns for p in first.root.rglob("*") if p.is_file()} == files
    assert prepare({**EMBEDDED, "vocab_size": 400}, "tiny", log=logs.append).root != first.root
    assert not list(cache.rglob("*.tmp"))


def test_an_interrupted_prepare_resumes_from_its_finished_steps(cache, monkeypatch):
    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(data.pipeline, "train_tokenizer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(EMBEDDED, "tiny", log=lambda m: None)
    [root] = (cache / "tiny").iterdir()
    shards = {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")}
    assert shards and not (root / "prepared.json").exists() and not (root / "tokenizer").exists()
    monkeypatch.undo()
    prepared = prepare(EMBEDDED, "tiny", log=lambda m: None)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")} == shards  # not rebuilt
    assert prepared.n_train_tokens > 0


def test_disk_full_is_a_clear_error_and_leaves_no_file(cache, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(DataError, match=r"disk full while writing .*val\.parquet; free space or set AR_CACHE_DIR"):
        prepare(EMBEDDED, "tiny", log=lambda m: None)
    assert not [p for p in cache.rglob("*") if p.suffix in (".parquet", ".tmp")]


# --------------------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize(
    "text",
    [
        "In the beginning God created the heaven and the earth.",
        "def f(x):\n\treturn x ** 2  # 42\n",
        "naïve café 你好 🙂 ∑x²",
        " \n\n  ",
    ],
)
def test_tokenizer_round_trips_text(embedded, text):
    enc = data.load_tokenizer(embedded.tokenizer_dir)
    assert enc.n_vocab == embedded.vocab_size
    ids = enc.encode_ordinary(text)
    assert enc.decode(ids) == text and max(ids) < embedded.vocab_size
    assert enc.encode(data.BOS_TOKEN, allowed_special="all") == [embedded.bos_id]


def test_token_bytes_count_the_bytes_of_the_text(embedded):
    enc = data.load_tokenizer(embedded.tokenizer_dir)
    nbytes = data.token_bytes(embedded.tokenizer_dir)
    assert nbytes.dtype == np.int32 and nbytes.shape == (embedded.vocab_size,)
    specials = [enc.encode_single_token(s) for s in data.SPECIAL_TOKENS]
    assert nbytes[embedded.bos_id] == 0 and (nbytes[specials] == 0).all()
    assert np.delete(nbytes, specials).min() >= 1
    text = CHAPTERS[7][:2000] + " naïve 你好 🙂"  # multi-byte characters split across byte tokens
    ids = enc.encode_ordinary(text)
    assert nbytes[ids].sum() == len(text.encode("utf-8"))
    assert nbytes[[embedded.bos_id, *ids]].sum() == len(text.encode("utf-8"))


# --------------------------------------------------------------------------------------- splits, token files


def test_train_and_val_are_disjoint_and_token_files_hold_the_shards(embedded):
    train_docs = [d for p in sorted((embedded.root / "shards").glob("*.parquet")) for d in texts(p)]
    val_docs = texts(embedded.root / "val" / "val.parquet")
    assert train_docs and val_docs and not set(train_docs) & set(val_docs)
    assert set(train_docs) | set(val_docs) <= set(CHAPTERS)
    assert abs(len(val_docs) / (len(train_docs) + len(val_docs)) - 0.2) < 0.01  # embedded val_fraction
    enc = data.load_tokenizer(embedded.tokenizer_dir)
    for docs, path in ((train_docs, embedded.train_tokens), (val_docs, embedded.val_tokens)):
        tokenized = docs_of(path)
        assert len(tokenized) == len(docs) and all(t[0] == embedded.bos_id for t in tokenized)
        assert [enc.decode(t[1:].tolist()) for t in tokenized] == docs
        assert embedded.bos_id not in np.concatenate([t[1:] for t in tokenized])


def test_files_source_reads_utf8_text_files_once(cache, tmp_path):
    src = tmp_path / "tree"
    (src / "b" / "deep").mkdir(parents=True)
    (src / "a").mkdir()
    good = {src / "a" / f"{i}.txt": CHAPTERS[i] for i in range(12)}
    good[src / "b" / "deep" / "m.py"] = "# " + CHAPTERS[40]
    good[src / "b" / "n.md"] = CHAPTERS[41]
    for path, text in good.items():
        path.write_text(text, encoding="utf-8")
    (src / "b" / "dup.rst").write_text(CHAPTERS[3])  # same content as a/3.txt
    (src / "b" / "small.txt").write_text("too short")  # < min_bytes
    (src / "b" / "data.bin").write_text(CHAPTERS[50])  # extension not listed
    (src / "b" / "latin1.txt").write_bytes(CHAPTERS[51].encode() + b"\xff\xfe")  # not UTF-8
    (src / "b" / "link.txt").symlink_to(src / "a" / "0.txt")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "o.txt").write_text(CHAPTERS[52])
    (src / "b" / "linked_dir").symlink_to(outside)  # never followed
    max_bytes = max(len(t.encode()) for t in good.values())
    (src / "b" / "big.txt").write_text("x" * (max_bytes + 1))  # > max_bytes
    spec = {"source": "files", "paths": [str(src)], "vocab_size": 300, "max_bytes": max_bytes, "val_fraction": 0.2}
    prepared = prepare(spec, "files", log=lambda m: None)
    train = [d for p in sorted((prepared.root / "shards").glob("*.parquet")) for d in texts(p)]
    val = texts(prepared.root / "val" / "val.parquet")
    assert sorted(train + val) == sorted(good.values())
    assert len(val) == 3 and not set(train) & set(val)
    again = prepare(spec, "files", log=lambda m: None)
    assert again == prepared

    with pytest.raises(DataError, match=r"no text files .* found under .*empty; set \[data\] paths"):
        (tmp_path / "empty").mkdir()
        prepare({**spec, "paths": [str(tmp_path / "empty")]}, "files", log=lambda m: None)


def test_the_files_corpus_is_reproducible(cache, tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    for i in range(20):
        (src / f"{i:02d}.txt").write_text(CHAPTERS[100 + i])
    spec = {"source": "files", "paths": [str(src)], "vocab_size": 300}
    first = prepare(spec, "a", log=lambda m: None)
    second = prepare(spec, "b", log=lambda m: None)  # another task: built again from scratch
    for rel in ("shards/train_00000.parquet", "val/val.parquet"):
        assert texts(first.root / rel) == texts(second.root / rel)
    assert np.array_equal(np.load(first.train_tokens), np.load(second.train_tokens))
    assert first.data_id == second.data_id and len(first.data_id) == 12  # what scores are measured on


def test_one_file_more_in_the_tree_is_other_data_by_its_data_id(cache, tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    for i in range(20):
        (src / f"{i:02d}.txt").write_text(CHAPTERS[100 + i])
    spec = {"source": "files", "paths": [str(src)], "vocab_size": 300, "val_fraction": 0.2}
    before = prepare(spec, "a", log=lambda m: None)
    (src / "installed_later.py").write_text("# " + CHAPTERS[130])  # e.g. a package installed into /opt
    after = prepare(spec, "b", log=lambda m: None)
    assert texts(before.root / "val/val.parquet") != texts(after.root / "val/val.parquet")
    assert before.data_id != after.data_id


# --------------------------------------------------------------------------------------- loader, eval rows


def test_row_streams_start_rows_with_bos_and_repeat_for_a_seed(embedded):
    train_docs = [tuple(d.tolist()) for d in docs_of(embedded.train_tokens)]
    it = iter(RowStream(embedded.train_tokens, batch_size=8, seq_len=64, seed=3))
    for _ in range(5):
        rows = next(it)
        assert rows.shape == (8, 65) and rows.dtype == np.int32
        assert (rows[:, 0] == embedded.bos_id).all()
        for row in rows.tolist():  # each row opens with a piece of a train document
            first = row[1 : row.index(embedded.bos_id, 1)] if embedded.bos_id in row[1:] else row[1:]
            assert any(tuple(first) in _windows(doc[1:], len(first)) for doc in train_docs)
    same = [next(iter(RowStream(embedded.train_tokens, 8, 64, seed=3))).copy() for _ in range(2)]
    other = next(iter(RowStream(embedded.train_tokens, 8, 64, seed=4)))
    assert np.array_equal(same[0], same[1]) and not np.array_equal(same[0], other)


def _windows(doc: tuple, n: int) -> set:
    return {doc[i : i + n] for i in range(len(doc) - n + 1)}


def test_row_streams_repeat_epochs_forever(tmp_path):
    path = write_token_file(tmp_path, [3, 2, 4])
    it = iter(RowStream(path, batch_size=2, seq_len=4, seed=0))
    assert all(next(it).shape == (2, 5) for _ in range(50))


def test_best_fit_takes_the_largest_piece_that_fits_and_crops_only_when_none_does(tmp_path):
    (tmp_path / "fit").mkdir()
    path = write_token_file(tmp_path / "fit", [7, 4, 1])  # docs at 0..6, 7..10, 11
    assert eval_rows(path, 4, 4)[0].tolist() == [7, 8, 9, 10, 11]  # doc of 4, then doc of 1: no crop
    (tmp_path / "crop").mkdir()
    path = write_token_file(tmp_path / "crop", [9, 7])  # docs at 0..8, 9..15: neither fits 5
    # neither fits 5: the shortest is cropped and its rest comes back behind its BOS (9), nothing is dropped
    assert eval_rows(path, 8, 4).tolist() == [[9, 10, 11, 12, 13], [9, 14, 15, 0, 1]]


def test_eval_rows_are_deterministic_and_capped(embedded):
    rows = eval_rows(embedded.val_tokens, 1000, 64)
    assert rows.shape == (math.ceil(1000 / 64), 65) and rows.dtype == np.int64
    assert (rows[:, 0] == embedded.bos_id).all()
    assert np.array_equal(rows, eval_rows(embedded.val_tokens, 1000, 64))
    everything = eval_rows(embedded.val_tokens, 10**9, 64)
    assert 0 < len(everything) < math.ceil(10**9 / 64) and np.array_equal(everything[: len(rows)], rows)


def test_eval_rows_of_a_too_small_split_is_a_clear_error(tmp_path):
    path = write_token_file(tmp_path, [3, 2])
    with pytest.raises(ValueError, match="too few for one evaluation row of 9"):
        eval_rows(path, 100, 8)


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 40), min_size=1, max_size=30),
    batch_size=st.integers(1, 4),
    seq_len=st.integers(1, 32),
    seed=st.integers(0, 2**16),
)
def test_packing_property(lengths, batch_size, seq_len, seed):
    """Every row starts with a BOS; every segment is a document's BOS followed by a contiguous slice of
    that same document; a cropped document's rest reappears, so an epoch drops no token."""
    with tempfile.TemporaryDirectory() as tmp:
        path = write_token_file(Path(tmp), lengths)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        doc_of_start = {int(s): i for i, s in enumerate(starts[:-1])}
        it = iter(RowStream(path, batch_size, seq_len, seed=seed))
        for _ in range(3):
            rows = next(it)
            assert rows.shape == (batch_size, seq_len + 1)
            for row in rows.tolist():
                pos = 0
                while pos < len(row):
                    assert row[pos] in doc_of_start, "a segment does not begin at a document's BOS"
                    doc = doc_of_start[row[pos]]
                    end = int(starts[doc + 1])
                    j = pos + 1
                    if j < len(row) and row[pos] < row[j] < end:  # the piece may start past the BOS
                        j += 1
                        while j < len(row) and row[j] == row[j - 1] + 1 and row[j] < end:
                            j += 1
                    assert all(row[pos] < t < end for t in row[pos + 1 : j]), "a segment leaves its document"
                    pos = j


def test_an_epoch_of_eval_rows_drops_no_token(tmp_path):
    lengths = [9, 7, 30, 3, 12]
    path = write_token_file(tmp_path, lengths)
    rows = eval_rows(path, 10**6, 4)
    starts = {int(s) for s in np.concatenate([[0], np.cumsum(lengths)])[:-1]}
    content = [t for t in rows.ravel().tolist() if t not in starts]
    assert sorted(content) == sorted(set(range(sum(lengths))) - starts)


# --------------------------------------------------------------------------------------- climbmix download


def parquet_bytes(docs: list[str]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"text": docs}), buf, row_group_size=8)
    return buf.getvalue()


SHARDS = {
    "shard_00000.parquet": parquet_bytes(CHAPTERS[200:230]),
    "shard_00001.parquet": parquet_bytes(CHAPTERS[230:260]),
    "shard_06542.parquet": parquet_bytes(CHAPTERS[260:270]),
}


class ShardServer(http.server.ThreadingHTTPServer):
    """Serves SHARDS under /data/ with Range support; can fail the first requests or cut files short."""

    def __init__(self, fail_first: int = 0, drop_once: bool = False):
        super().__init__(("127.0.0.1", 0), ShardHandler)
        self.fail_first, self.drop_once, self.dropped = fail_first, drop_once, set()
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/data"


class ShardHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        srv: ShardServer = self.server
        name, rng = self.path.rsplit("/", 1)[-1], self.headers.get("Range")
        with srv.lock:
            srv.requests.append((name, rng))
            fail = srv.fail_first > 0
            srv.fail_first -= fail
            drop = not fail and srv.drop_once and name not in srv.dropped
            if drop:
                srv.dropped.add(name)
        if fail:
            return self.send_error(500, "flaky")
        if name not in SHARDS or self.path != f"/data/{name}":
            return self.send_error(404)
        body = SHARDS[name]
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start : start + (len(body) - start) // 2] if drop else body[start:])
        self.close_connection = drop

    def log_message(self, *args):
        pass


@pytest.fixture
def server(request):
    srv = ShardServer(**getattr(request, "param", {}))
    yield srv
    srv.shutdown()
    srv.server_close()


def climbmix(url: str, **kw) -> dict:
    return {
        "source": "climbmix",
        "base_url": url,
        "num_shards": 2,
        "vocab_size": 300,
        "seq_len": 64,
        "retries": 4,
        "backoff_s": 0.01,
        "timeout_s": 30,
        **kw,
    }  # generous: CI machines are loaded


@pytest.mark.parametrize("server", [{"fail_first": 2, "drop_once": True}], indirect=True)
def test_climbmix_download_retries_and_resumes(cache, server):
    logs = []
    prepared = prepare(climbmix(server.url), "cm", log=logs.append)
    for name, body in SHARDS.items():
        folder = "val" if name == "shard_06542.parquet" else "shards"
        assert (prepared.root / folder / name).read_bytes() == body
    assert not list(prepared.root.rglob("*.part"))
    resumed = [(n, r) for n, r in server.requests if r]
    assert {n for n, _ in resumed} == set(SHARDS)  # every file was cut once and resumed with Range
    assert all(r == f"bytes={len(SHARDS[n]) // 2}-" for n, r in resumed)
    assert any("HTTP 500" in m for m in logs) and any("connection dropped" in m for m in logs)
    assert texts(prepared.root / "val" / "shard_06542.parquet") == CHAPTERS[260:270]
    assert len(docs_of(prepared.val_tokens)) == 10 and len(docs_of(prepared.train_tokens)) == 60
    n_requests = len(server.requests)
    assert prepare(climbmix(server.url), "cm", log=logs.append) == prepared
    assert len(server.requests) == n_requests  # cached: nothing downloaded again


@pytest.mark.parametrize("server", [{"drop_once": True}], indirect=True)
def test_climbmix_resumes_partial_files_left_by_an_earlier_run(cache, server):
    with pytest.raises(DataError, match="connection dropped"):  # the earlier run gives up mid-file
        prepare(climbmix(server.url, retries=1), "cm", log=lambda m: None)
    partial = sorted(p.name for p in cache.rglob("*.part"))
    assert partial == [f"{n}.part" for n in sorted(SHARDS)] and not list(cache.rglob("shard_*.parquet"))
    server.requests.clear()
    prepared = prepare(climbmix(server.url), "cm", log=lambda m: None)  # retries: same cache folder
    assert sorted(server.requests) == [(n, f"bytes={len(SHARDS[n]) // 2}-") for n in sorted(SHARDS)]
    assert (prepared.root / "shards" / "shard_00001.parquet").read_bytes() == SHARDS["shard_00001.parquet"]


def test_climbmix_missing_shard_fails_without_retrying(cache, server):
    with pytest.raises(DataError, match=r"cannot download .*/nope/shard_\d+\.parquet: HTTP 404"):
        prepare(climbmix(server.url + "/nope"), "cm", log=lambda m: None)
    assert len(server.requests) == 3  # one request per shard, no retries


def test_unreachable_server_is_a_quick_clear_error(cache):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(DataError) as e:
        prepare(climbmix(f"http://127.0.0.1:{port}/data", retries=3), "cm", log=lambda m: None)
    assert time.perf_counter() - t0 < 10
    message = str(e.value)
    assert message.startswith(f"cannot download http://127.0.0.1:{port}/data/shard_")
    assert message.endswith('; check network or use source = "files"/"embedded"') and "\n" not in message
    assert "refused" in message.lower()


def test_parquet_source_trains_on_every_shard_but_the_pinned_validation_shard(tmp_path, monkeypatch):
    monkeypatch.setenv("AR_CACHE_DIR", str(tmp_path / "cache"))
    shards = tmp_path / "shards"
    shards.mkdir()
    train_docs = [f"train document {i} " * 20 for i in range(40)]
    pq.write_table(pa.table({"text": train_docs[:20]}), shards / "shard_00000.parquet")
    pq.write_table(pa.table({"text": train_docs[20:]}), shards / "shard_00001.parquet")
    pq.write_table(pa.table({"text": ["validation only " * 20] * 5}), shards / "shard_06542.parquet")
    prepared = prepare({"source": "parquet", "dir": str(shards), "vocab_size": 300}, "t", log=lambda m: None)
    enc = load_tokenizer(prepared.tokenizer_dir)
    assert "validation only" not in enc.decode(np.load(prepared.train_tokens).tolist())
    assert "validation only" in enc.decode(np.load(prepared.val_tokens).tolist())
    assert str(shards.resolve()) in prepared.raw_paths
    with pytest.raises(DataError, match="needs dir = a folder with parquet shards"):
        prepare({"source": "parquet", "dir": str(tmp_path / "nothing"), "vocab_size": 300}, "t", log=lambda m: None)
