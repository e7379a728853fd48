"""Approximate search (`--ann`, faiss IVF): agreement with exact search, recall, exact scores, persistence."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from clipcli.cli import app
from clipcli.errors import BadInputError
from clipcli.pipelines import retrieve
from clipcli.store import ann
from clipcli.store.index import VideoIndex, VideoRecord

runner = CliRunner()
RECALL_FLOOR = 0.90  # recall@10 on random queries over random data (README: retrieve, Scale)


@pytest.fixture
def faiss():
    return pytest.importorskip("faiss")


def unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=-1, keepdims=True)


def record(path, vector) -> VideoRecord:
    return VideoRecord(path, 1, 1, 3.0, vector, vector[None], np.ones(1), np.zeros(1))


@pytest.fixture
def retriever(tiny_vit_path):
    return retrieve.Retriever.load(str(tiny_vit_path), device="cpu")


@pytest.fixture
def planted(tmp_path, retriever):
    """2k random 32-d videos under lib/, and 20 queries each with 3 planted near-duplicates (cosines .99/.95/.9)."""
    rng = np.random.default_rng(0)
    vectors = unit(rng.standard_normal((2000, 32)))
    queries = unit(rng.standard_normal((20, 32)))
    targets = rng.choice(len(vectors), (20, 3), replace=False)
    for query, rows in zip(queries, targets, strict=True):
        for row, cosine in zip(rows, (0.99, 0.95, 0.9), strict=True):
            away = unit(vectors[row] - (vectors[row] @ query) * query)  # a direction orthogonal to the query
            vectors[row] = cosine * query + np.sqrt(1 - cosine**2) * away
    folder = tmp_path / "lib"
    folder.mkdir()
    index = VideoIndex(tmp_path / "index")
    index.reset(retriever.identity(12, "uniform"))
    index.write(record(folder / f"v{row:04d}.mp4", vector) for row, vector in enumerate(vectors))
    yield index, folder, vectors, queries, targets
    index.close()


def search(index, folder, retriever, query, mode, top_k=10, threshold=ann.DEFAULT_THRESHOLD):
    return retrieve.search(
        [(index, [folder])], retriever, torch.from_numpy(query), top_k, ann_mode=mode, ann_threshold=threshold
    )


def test_ann_agrees_with_exact_search_on_planted_queries(faiss, planted, retriever):
    index, folder, vectors, queries, targets = planted
    stored = vectors.astype(np.float16).astype(np.float32)
    found = 0
    for query, rows in zip(queries, targets, strict=True):
        approximate = search(index, folder, retriever, query, "on")
        exact = search(index, folder, retriever, query, "off")
        planted_paths = [folder / f"v{row:04d}.mp4" for row in rows]
        assert [hit.path for hit in approximate[:3]] == [hit.path for hit in exact[:3]] == planted_paths
        found += len({hit.path for hit in approximate} & {hit.path for hit in exact})
        for hit in approximate:  # exact cosines of the stored (fp16) embeddings, in order
            row = int(hit.path.stem[1:])
            assert hit.score == pytest.approx(float(stored[row] @ query), abs=1e-6)
        assert [hit.score for hit in approximate] == sorted((hit.score for hit in approximate), reverse=True)
        assert [hit.rank for hit in approximate] == list(range(1, 11))
    assert found / (10 * len(queries)) >= RECALL_FLOOR


def test_recall_at_10_on_random_data_is_above_the_floor(faiss):
    rng = np.random.default_rng(1)
    vectors = unit(rng.standard_normal((2000, 64))).astype(np.float16)
    approximate = ann.AnnIndex.build(vectors)
    assert approximate.recall >= ann.TARGET_RECALL and 1 <= approximate.nprobe <= approximate.nlist
    queries = unit(rng.standard_normal((200, 64)))
    truth = ann.exact_top_k(queries, vectors, 10)
    found = sum(len(set(approximate.search(query, 10)) & set(rows)) for query, rows in zip(queries, truth, strict=True))
    assert found / truth.size >= RECALL_FLOOR


def test_exact_top_k_is_brute_force_across_chunks(monkeypatch):
    monkeypatch.setattr(ann, "_CHUNK", 7)
    rng = np.random.default_rng(2)
    vectors, queries = unit(rng.standard_normal((50, 8))), unit(rng.standard_normal((5, 8)))
    expected = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    np.testing.assert_array_equal(ann.exact_top_k(queries, vectors, 10), expected)


def test_auto_uses_the_approximate_index_only_above_the_threshold(faiss, planted, retriever):
    index, folder, vectors, queries, _ = planted
    search(index, folder, retriever, queries[0], "auto", threshold=5000)
    assert not list(index.folder.glob("ann-*"))
    search(index, folder, retriever, queries[0], "auto", threshold=1000)
    assert len(list(index.folder.glob("ann-*.faiss"))) == 1


def test_the_index_is_saved_reused_and_rebuilt_when_videos_or_model_change(faiss, planted, retriever, monkeypatch):
    index, folder, vectors, queries, _ = planted
    builds = []
    real_build = ann.AnnIndex.build

    def counting_build(embeddings, **options):
        builds.append(len(embeddings))
        return real_build(embeddings, **options)

    monkeypatch.setattr(ann.AnnIndex, "build", counting_build)
    first = search(index, folder, retriever, queries[0], "on")
    (saved,) = index.folder.glob("ann-*.faiss")
    description = json.loads(saved.with_suffix(".json").read_text())
    assert description["videos"] == 2000 and description["recall_at_10"] >= ann.TARGET_RECALL
    assert builds == [2000]
    with VideoIndex(index.folder) as reopened:  # another process: reads the saved one
        assert [hit.path for hit in search(reopened, folder, retriever, queries[0], "on")] == [h.path for h in first]
    assert builds == [2000]

    index.write([record(folder / "new.mp4", queries[0])])  # a new video: rebuilt, the old files dropped
    hits = search(index, folder, retriever, queries[0], "on")
    assert hits[0].path == folder / "new.mp4" and hits[0].score == pytest.approx(1.0, abs=2e-3)
    assert builds == [2000, 2001]
    assert [path.name for path in index.folder.glob("ann-*.faiss")] != [saved.name]
    assert len(list(index.folder.glob("ann-*"))) == 2

    index.remove([folder / "new.mp4"])  # a removed one
    search(index, folder, retriever, queries[0], "on")
    assert builds == [2000, 2001, 2000]

    index.reset({**retriever.identity(12, "uniform"), "tower": "sha256:another"})  # another model
    others = unit(np.random.default_rng(3).normal(size=(300, 32)))
    index.write(record(folder / f"w{row:04d}.mp4", vector) for row, vector in enumerate(others))
    hits = search(index, folder, retriever, queries[0], "on")
    assert builds == [2000, 2001, 2000, 300] and all(hit.path.name.startswith("w") for hit in hits)


def test_a_saved_index_of_other_data_is_not_used(faiss, planted, retriever):
    index, folder, vectors, queries, _ = planted
    search(index, folder, retriever, queries[0], "on")
    (saved,) = index.folder.glob("ann-*.json")
    description = json.loads(saved.read_text())
    saved.write_text(json.dumps({**description, "fingerprint": "0" * 32}))  # e.g. a deleted and rebuilt database
    with VideoIndex(index.folder) as reopened:
        assert reopened.ann() is not None
    rebuilt = json.loads(saved.read_text())  # rebuilt and saved again
    assert rebuilt.pop("build_s") > 0 and rebuilt == {key: description[key] for key in rebuilt}
    saved.with_suffix(".faiss").write_bytes(b"not a faiss index")
    with VideoIndex(index.folder) as reopened:
        hits = search(reopened, folder, retriever, queries[0], "on")
    assert hits[0].score == pytest.approx(0.99, abs=2e-3)


def test_a_selection_of_the_index_is_searched_within(faiss, planted, retriever):
    index, folder, vectors, queries, targets = planted
    other = folder.parent / "other"
    index.write(record(other / f"x{row}.mp4", queries[row]) for row in range(20))  # exact copies of the queries
    for query, rows in zip(queries[:5], targets[:5], strict=True):
        hits = search(index, folder, retriever, query, "on")
        assert [hit.path for hit in hits[:3]] == [folder / f"v{row:04d}.mp4" for row in rows]
        assert all(hit.path.parent == folder for hit in hits)
    hits = search(index, other, retriever, queries[4], "on", top_k=3)
    assert hits[0].path == other / "x4.mp4" and len(hits) == 3
    scattered = retrieve.search(
        [(index, [folder / "v0000.mp4", other])], retriever, torch.from_numpy(queries[7]), 5, ann_mode="on"
    )
    assert scattered[0].path == other / "x7.mp4"
    assert {hit.path for hit in scattered} <= {folder / "v0000.mp4", *(other / f"x{row}.mp4" for row in range(20))}


def test_ann_on_without_faiss_fails_with_one_clear_line(planted, retriever, tiny_vit_path, monkeypatch):
    index, folder, vectors, queries, _ = planted
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError
    assert not ann.available()
    with pytest.raises(BadInputError, match=r"pip install clipcli\[faiss\]"):
        search(index, folder, retriever, queries[0], "on")
    hits = search(index, folder, retriever, queries[0], "auto", threshold=10)  # auto: exact without faiss
    assert len(hits) == 10 and not list(index.folder.glob("ann-*"))
    result = runner.invoke(
        app, ["retrieve", str(folder), "a query", "--model", str(tiny_vit_path), "--index", str(index.folder),
              "--no-update", "--device", "cpu", "--ann", "on"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "pip install clipcli[faiss]" in result.stderr


def test_cli_ann_option(faiss, planted, tiny_vit_path):
    index, folder, *_ = planted
    args = ["retrieve", str(folder), "a query", "--model", str(tiny_vit_path), "--index", str(index.folder),
            "--no-update", "--device", "cpu", "--json", "-k", "5"]  # fmt: skip
    results = {mode: runner.invoke(app, [*args, "--ann", mode]) for mode in ("on", "off")}
    assert all(result.exit_code == 0 for result in results.values()), results["on"].output
    on, off = (json.loads(results[mode].stdout)["hits"] for mode in ("on", "off"))
    assert [hit["path"] for hit in on[:3]] == [hit["path"] for hit in off[:3]]
    assert on[0]["score"] == pytest.approx(off[0]["score"], abs=1e-5)
    assert list(index.folder.glob("ann-*.faiss"))
    result = runner.invoke(app, [*args, "--ann", "sometimes"])
    assert result.exit_code == 2 and "--ann" in result.stderr


def test_the_index_saves_and_loads_in_a_folder_whose_name_is_not_utf8(faiss, tmp_path):
    """faiss takes UTF-8 names only; an index folder is named after the searched folder, which may not be."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    folder.mkdir()
    vectors = unit(np.random.default_rng(3).standard_normal((400, 16))).astype(np.float16)
    built = ann.AnnIndex.build(vectors)
    meta = {"videos": 400, "dim": 16}
    built.save(folder / "ann-x-1.faiss", meta)
    loaded = ann.AnnIndex.load(folder / "ann-x-1.faiss", meta)
    assert loaded is not None and loaded.nprobe == built.nprobe
    query = vectors[7].astype(np.float32)
    assert list(loaded.search(query, 5)) == list(built.search(query, 5))
    assert [p.name for p in folder.iterdir() if ".tmp" in p.name] == []
