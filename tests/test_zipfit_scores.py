"""ZIP-FIT scores: equal to the plain reference, to the zip-fit package, and deterministic."""
import numpy as np
import pytest

from ccomp import zipfit

from reference import zipfit_ref


@pytest.mark.parametrize("compressor,level", [("gzip", 1), ("gzip", 6), ("gzip", 0), ("lz4", 0), ("lz4", 9),
                                              ("zstd", 3)])
def test_scores_equal_plain_reference(real_documents, humaneval_prompts, compressor, level):
    sources = real_documents[:20]
    targets = humaneval_prompts[:15]
    got = zipfit.alignment_scores(sources, targets, compressor, level)
    expected = zipfit_ref.alignment_scores(sources, targets, compressor, level)
    assert got.dtype == np.float64 and got.shape == (len(sources),)
    assert np.array_equal(got, np.array(expected))  # same sizes, same summation order: bit-identical


@pytest.mark.parametrize("compressor", ["gzip", "lz4"])
def test_scores_equal_zip_fit_package(real_documents, humaneval_prompts, compressor):
    from zip_fit import ZIPFIT

    sources = real_documents
    ref = ZIPFIT("unused.jsonl", "unused.jsonl", k=len(sources), compression_algorithm=compressor,
                 compress_level=1)
    ranked = ref.rank_sequences_by_alignment(sources, humaneval_prompts)
    ref_scores = dict(ranked)
    got = zipfit.alignment_scores(sources, humaneval_prompts, compressor, 1)
    assert len(ref_scores) == len(sources)
    diffs = [abs(got[i] - ref_scores[s]) for i, s in enumerate(sources)]
    assert max(diffs) <= 1e-12


def test_identical_for_any_thread_count_chunking_and_input_kind(real_documents, humaneval_prompts):
    sources = real_documents
    targets = humaneval_prompts[:40]
    base = zipfit.alignment_scores(sources, targets, "gzip", 1, threads=1)
    for threads in (2, 3, 8):
        for chunk in (1, 7, 4096):
            got = zipfit.alignment_scores(iter(sources), targets, "gzip", 1, threads=threads, chunk_size=chunk)
            assert np.array_equal(got, base)
    as_bytes = zipfit.alignment_scores([s.encode() for s in sources], tuple(targets), "gzip", 1)
    assert np.array_equal(as_bytes, base)
    gen = zipfit.alignment_scores((s for s in sources), (t for t in targets), "gzip", 1, progress=True)
    assert np.array_equal(gen, base)


def test_model_and_zlib_engines_agree(real_documents, humaneval_prompts):
    for level in (1, 4, 9):
        a = zipfit.alignment_scores(real_documents, humaneval_prompts[:30], "gzip", level, engine="zlib")
        b = zipfit.alignment_scores(real_documents, humaneval_prompts[:30], "gzip", level, engine="auto")
        assert np.array_equal(a, b)


def test_select_top_k_orders_by_score_then_index(humaneval_prompts):
    targets = humaneval_prompts[:10]
    code = humaneval_prompts[20]
    sources = ["plain english words about nothing in particular", code, "plain english words about nothing in particular",
               code, "", "0123456789" * 5]
    idx, scores = zipfit.select_top_k(sources, targets, k=4, level=1)
    all_scores = zipfit.alignment_scores(sources, targets, level=1)
    assert list(idx[:2]) == [1, 3]  # identical texts tie: lower index first
    assert scores[0] == scores[1]
    assert np.array_equal(scores, all_scores[idx])
    assert all(scores[i] >= scores[i + 1] for i in range(len(scores) - 1))
    idx_all, _ = zipfit.select_top_k(sources, targets, k=100, level=1)
    assert sorted(idx_all) == list(range(len(sources)))
    assert list(zipfit.select_top_k(sources, targets, k=0, level=1)[0]) == []


def test_code_scores_above_prose_for_humaneval(humaneval_prompts):
    from conftest import corpus_bytes

    prose = corpus_bytes("alice29.txt").decode()
    held_out = humaneval_prompts[100:120]
    pairs = [(code, prose[5000 + 997 * i: 5000 + 997 * i + len(code)]) for i, code in enumerate(held_out)]
    s = zipfit.alignment_scores([t for pair in pairs for t in pair], humaneval_prompts[:100], level=1)
    # code of the same length as the prose aligns better with HumanEval, every time
    assert all(s[2 * i] > s[2 * i + 1] for i in range(len(pairs)))


def test_empty_texts_are_valid():
    s = zipfit.alignment_scores(["", "abc"], ["", "abc"], "gzip", 1)
    ref = zipfit_ref.alignment_scores(["", "abc"], ["", "abc"], "gzip", 1)
    assert np.array_equal(s, np.array(ref))
    assert zipfit.alignment_scores([], ["x"]).shape == (0,)


def test_score_jsonl_streams_a_file(tmp_path, real_documents, humaneval_prompts):
    import json

    path = tmp_path / "s.jsonl"
    with open(path, "w") as f:
        for i, d in enumerate(real_documents):
            f.write(json.dumps({"id": i, "content": d}) + "\n")
            if i % 10 == 0:
                f.write("\n")  # blank lines are skipped
    got = zipfit.score_jsonl(path, humaneval_prompts[:20], key="content", level=1, chunk_size=5)
    assert np.array_equal(got, zipfit.alignment_scores(real_documents, humaneval_prompts[:20], level=1))


def test_concurrent_calls_from_python_threads(real_documents, humaneval_prompts):
    """The core keeps no global state: calls running at once in several Python threads
    (the GIL is released while scoring) give the same scores as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [("gzip", 1), ("gzip", 6), ("lz4", 0), ("zstd", 3)] * 2
    expected = {job: zipfit.alignment_scores(real_documents, humaneval_prompts[:30], *job) for job in set(jobs)}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [(job, pool.submit(zipfit.alignment_scores, real_documents, humaneval_prompts[:30], *job,
                                     threads=2)) for job in jobs]
        for job, fut in futures:
            assert np.array_equal(fut.result(), expected[job])


def test_level_0_reproduces_zip_fit_default_and_measures_length_only(real_documents, humaneval_prompts):
    from zip_fit import ZIPFIT

    sources, targets = real_documents[:12], humaneval_prompts[:20]
    ref = dict(ZIPFIT("unused.jsonl", "unused.jsonl", k=len(sources)).rank_sequences_by_alignment(sources, targets))
    got = zipfit.alignment_scores(sources, targets, "gzip", 0)
    assert max(abs(got[i] - ref[s]) for i, s in enumerate(sources)) <= 1e-12  # the reference's default level is 0
    assert not np.allclose(zipfit.alignment_scores(sources, targets), got)  # ccomp's default (gzip 9) is not
    # stored blocks: C(b) = len(b) + 23 below 64 KB, so NCD = 1 - 23 / max(C(x), C(y)) whatever the content
    size = [len(t.encode()) + 23 for t in targets]
    for i, s in enumerate(sources):
        cs = len(s.encode()) + 23
        assert got[i] == pytest.approx(np.mean([23 / max(cs, ct) for ct in size]), abs=1e-15)
    text = max(real_documents, key=len)  # 1 - 23 / (len + 23) is near 1 for any text of a few hundred bytes
    assert zipfit.ncd(text, text, "gzip", 0) > 0.9 > 0.2 > zipfit.ncd(text, text, "gzip", 1)
