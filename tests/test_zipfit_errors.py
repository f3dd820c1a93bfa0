"""Bad input gets a clear exception that says what was expected and what was received."""
import json

import numpy as np
import pytest

from ccomp import zipfit


def test_empty_target_set():
    with pytest.raises(ValueError, match="target set is empty"):
        zipfit.alignment_scores(["a"], [])
    with pytest.raises(ValueError, match="target set is empty"):
        zipfit.select_top_k(["a"], iter([]), k=1)


def test_unknown_compressor_and_levels():
    with pytest.raises(ValueError, match="unknown compressor 'brotli'"):
        zipfit.alignment_scores(["a"], ["b"], compressor="brotli")
    with pytest.raises(ValueError, match=r"gzip level must be in \[0, 9\], got 10"):
        zipfit.alignment_scores(["a"], ["b"], compressor="gzip", level=10)
    with pytest.raises(ValueError, match=r"gzip level must be in \[0, 9\], got -1"):
        zipfit.compressed_size("a", "gzip", -1)
    with pytest.raises(ValueError, match=r"lz4 level must be in \[0, 12\], got 13"):
        zipfit.compressed_size("a", "lz4", 13)
    with pytest.raises(ValueError, match=r"zstd level must be in"):
        zipfit.compressed_size("a", "zstd", 23)
    with pytest.raises(TypeError, match="level must be an int"):
        zipfit.compressed_size("a", "gzip", 1.5)
    with pytest.raises(ValueError, match="the lz4 model covers lz4 levels 0-2"):
        zipfit.compressed_size("a", "lz4", 9, engine="model")
    with pytest.raises(ValueError, match="zstd has no size model"):
        zipfit.compressed_size("a", "zstd", 3, engine="model")
    with pytest.raises(ValueError, match="engine='zlib' applies to gzip only"):
        zipfit.compressed_size("a", "lz4", 1, engine="zlib")
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'library', 'zlib', 'model', got 'fast'"):
        zipfit.compressed_size("a", "gzip", 1, engine="fast")


def test_non_text_item_names_its_index():
    with pytest.raises(TypeError, match="sources item 2: expected str or a bytes-like object, got int"):
        zipfit.alignment_scores(["a", "b", 3], ["t"])
    # the index is global across streamed chunks
    with pytest.raises(TypeError, match="sources item 7: .* got NoneType"):
        zipfit.alignment_scores(iter(["x"] * 7 + [None]), ["t"], chunk_size=3)
    with pytest.raises(TypeError, match="targets item 1: .* got float"):
        zipfit.alignment_scores(["a"], ["t", 1.0])
    with pytest.raises(TypeError, match="not a single str"):
        zipfit.alignment_scores("abc", ["t"])
    with pytest.raises(TypeError, match="not a single str"):
        zipfit.alignment_scores(["a"], "targets")
    with pytest.raises(TypeError, match="iterable of texts, got int"):
        zipfit.alignment_scores(5, ["t"])
    with pytest.raises(TypeError, match="contiguous"):
        zipfit.alignment_scores([np.arange(10, dtype=np.uint8)[::2]], ["t"])


def test_text_that_is_not_utf8_encodable():
    with pytest.raises(ValueError, match="sources item 1 cannot be encoded as UTF-8"):
        zipfit.alignment_scores(["ok", "bad \ud800"], ["t"])


def test_bad_threads_and_k():
    with pytest.raises(ValueError, match=r"threads must be an int in \[1, 4096\], got 0"):
        zipfit.alignment_scores(["a"], ["b"], threads=0)
    with pytest.raises(TypeError, match="threads must be an int, got str"):
        zipfit.alignment_scores(["a"], ["b"], threads="2")
    with pytest.raises(ValueError, match=r"k must be an int in \[0, inf\], got -1"):
        zipfit.select_top_k(["a"], ["b"], k=-1)
    with pytest.raises(TypeError, match="k must be an int"):
        zipfit.select_top_k(["a"], ["b"], k=2.0)
    with pytest.raises(ValueError, match=r"chunk_size must be an int in \[1, "):
        zipfit.alignment_scores(["a"], ["b"], chunk_size=0)


def test_unreadable_jsonl_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n" + '{"text": "broken\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2: not a valid JSON record"):
        zipfit.score_jsonl(path, ["t"])
    path.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(ValueError, match=r"line 2: record has no field 'text'"):
        zipfit.score_jsonl(path, ["t"])
    path.write_text(json.dumps({"text": 5}) + "\n")
    with pytest.raises(TypeError, match=r"line 1: field 'text' must be a string, got int"):
        zipfit.score_jsonl(path, ["t"])
    path.write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"line 1: not a valid JSON record"):
        zipfit.score_jsonl(path, ["t"])
    with pytest.raises(FileNotFoundError):
        zipfit.score_jsonl(tmp_path / "missing.jsonl", ["t"])


# ---- issue #13: hostile arguments ---------------------------------------------------------------

def test_no_silent_truncation_or_overflow():
    # item 17: chunk_size=1.9 was truncated to 1; 2**70 raised OverflowError
    with pytest.raises(TypeError, match="chunk_size must be an int, got float 1.9"):
        zipfit.alignment_scores(["a"], ["b"], chunk_size=1.9)
    with pytest.raises(ValueError, match="chunk_size must be an int in"):
        zipfit.alignment_scores(["a"], ["b"], chunk_size=2**70)
    with pytest.raises(TypeError, match="level must be an int, got float 1.5"):
        zipfit.compressed_sizes(["a"], "gzip", 1.5)
    with pytest.raises(ValueError, match=r"gzip level must be in \[0, 9\], got 1180591620717411303424"):
        zipfit.compressed_sizes(["a"], "gzip", 2**70)
    with pytest.raises(TypeError, match="k must be an int, got float 2.0"):
        zipfit.select_top_k(["a"], ["b"], k=2.0)
    with pytest.raises(TypeError, match="threads must be an int, got float 2.5"):
        zipfit.compressed_sizes(["a"], threads=2.5)
    with pytest.raises(ValueError, match=r"threads must be an int in \[1, 4096\], got 1180591620717411303424"):
        zipfit.alignment_scores(["a"], ["b"], threads=2**70)
    with pytest.raises(TypeError, match="progress must be True or False, got int"):
        zipfit.alignment_scores(["a"], ["b"], progress=1)
    with pytest.raises(TypeError, match="engine must be a str"):
        zipfit.compressed_size("a", engine=2)
    with pytest.raises(TypeError, match="compressor must be a str"):
        zipfit.engine(None)
    # numpy integers are ints
    assert zipfit.compressed_size("abc", "gzip", np.int64(6)) == zipfit.compressed_size("abc", "gzip", 6)


def test_model_engine_refuses_lz4_inputs_over_one_block():
    # item 17: engine="model" silently used the library for lz4 inputs over 64 KiB
    big = bytes(range(256)) * 300  # 76800 bytes
    with pytest.raises(ValueError, match=r"engine 'model' covers lz4 inputs up to 65536 bytes .*got 76800 bytes"):
        zipfit.compressed_size(big, "lz4", 0, engine="model")
    with pytest.raises(ValueError, match="engine 'model' covers lz4 inputs up to 65536 bytes"):
        zipfit.compressed_sizes([b"small", big], "lz4", 1, engine="model")
    with pytest.raises(ValueError, match="engine 'model' covers lz4 inputs up to 65536 bytes"):
        zipfit.ncd(big[:40000], big[:40000], "lz4", 0, engine="model")  # the pair is over one block
    # "auto" takes the library beyond one block; both agree with the library
    assert zipfit.compressed_size(big, "lz4", 0) == zipfit.compressed_size(big, "lz4", 0, engine="library")
    assert zipfit.compressed_size(big[:60000], "lz4", 0, engine="model") == \
        zipfit.compressed_size(big[:60000], "lz4", 0, engine="library")


def test_text_arguments_are_named():
    with pytest.raises(TypeError, match="text must be a str or a bytes-like object, got int"):
        zipfit.compressed_size(5)
    with pytest.raises(TypeError, match="y must be a str or a bytes-like object, got NoneType"):
        zipfit.ncd("a", None)
    with pytest.raises(ValueError, match="x cannot be encoded as UTF-8"):
        zipfit.ncd("\udcff", "a")
    with pytest.raises(TypeError, match="texts item 1: expected str or a bytes-like object, got list"):
        zipfit.compressed_sizes(["a", ["b"]])
    # NumPy scalars, 0-d arrays and arrays of wider items are not text (no silent raw-byte sizes)
    with pytest.raises(TypeError, match="texts item 0: expected str or a bytes-like object of bytes, got a "
                                        "0-dimensional numpy.float64"):
        zipfit.compressed_sizes([np.float64("nan")])
    with pytest.raises(TypeError, match="texts item 1: .* got a 0-dimensional numpy.ndarray"):
        zipfit.compressed_sizes(["a", np.array(7)])
    with pytest.raises(TypeError, match=r"sources item 0: .*numpy.ndarray of 4-byte items \(use .tobytes\(\)"):
        zipfit.alignment_scores([np.zeros(3, np.float32)], ["t"])
    with pytest.raises(TypeError, match="text must be a str or a bytes-like object of bytes, got a 0-dimensional"):
        zipfit.compressed_size(np.int8(3))
    with pytest.raises(TypeError, match="sources must be an ordered iterable of texts .* got set"):
        zipfit.alignment_scores({"a", "b"}, ["t"])
    with pytest.raises(TypeError, match="targets must be an ordered iterable of texts .* got dict"):
        zipfit.alignment_scores(["a"], {"t": 1})
    assert list(zipfit.compressed_sizes([np.frombuffer(b"abc", np.uint8).reshape(1, 3)])) == \
        [zipfit.compressed_size(b"abc")]
    # empty inputs are valid
    assert zipfit.compressed_sizes([]).shape == (0,)
    assert zipfit.alignment_scores([], ["t"]).shape == (0,)
    assert zipfit.ncd("", "") == 0.0


def test_top_k_indices_refuses_bad_scores():
    with pytest.raises(ValueError, match="scores must be finite, found nan at index"):
        zipfit.top_k_indices([0.5, float("nan")], 1)
    with pytest.raises(ValueError, match="scores must have 1 dimension, got shape \\(\\)"):
        zipfit.top_k_indices(np.float64(0.5), 1)
    with pytest.raises(TypeError, match="scores must be a numeric array"):
        zipfit.top_k_indices(["a", "b"], 1)
    with pytest.raises(TypeError, match="scores must be real numbers"):
        zipfit.top_k_indices(np.array([1j, 2j]), 1)
    assert list(zipfit.top_k_indices(np.array([1, 3, 2], np.int32), 2)) == [1, 2]
    assert list(zipfit.top_k_indices([0.1, 0.3], 2**70)) == [1, 0]


def test_core_entry_points_validate_their_arguments():
    from ccomp import _core

    g, auto = _core.GZIP, _core.ENGINE_AUTO
    with pytest.raises(ValueError, match="compressor must be an int in"):
        _core.pair_size(7, 1, auto, b"a", None)
    with pytest.raises(TypeError, match="level must be an int, got float"):
        _core.pair_size(g, 1.0, auto, b"a", None)
    with pytest.raises(ValueError, match=r"level must be an int in \[0, 9\]"):
        _core.pair_size(g, 2**70, auto, b"a", None)
    with pytest.raises(ValueError, match="engine must be an int in"):
        _core.engine_name(g, 1, -1)
    with pytest.raises(TypeError, match="compressor must be an int, got str"):
        _core.level_range("gzip")
    with pytest.raises(TypeError, match="x: expected str or a bytes-like object, got object"):
        _core.pair_size(g, 1, auto, object(), None)
    with pytest.raises(TypeError, match="texts must be a sequence of texts, not a single str"):
        _core.compressed_sizes("abc", g, 1, auto)
    with pytest.raises(TypeError, match="texts must be a sequence of texts, got int"):
        _core.compressed_sizes(5, g, 1, auto)
    with pytest.raises(ValueError, match="index_offset must be an int in"):
        _core.compressed_sizes(["a"], g, 1, auto, index_offset=-1)
    with pytest.raises(ValueError, match="index_offset must be an int in"):
        _core.compressed_sizes(["a"], g, 1, auto, index_offset=2**70)
    with pytest.raises(ValueError, match="index_offset 9223372036854775807 is too large"):
        _core.compressed_sizes(["a", "b"], g, 1, auto, index_offset=2**63 - 1)
    with pytest.raises(ValueError, match="target set is empty"):
        _core.alignment_scores(["a"], [], np.zeros(0, np.int64), g, 1, auto)
    with pytest.raises(ValueError, match="target_sizes has 1 entries for 2 targets"):
        _core.alignment_scores(["a"], ["b", "c"], np.array([20]), g, 1, auto)
    with pytest.raises(ValueError, match=r"target_sizes\[0\] must be positive, got 0"):
        _core.alignment_scores(["a"], ["b"], np.array([0]), g, 1, auto)
    with pytest.raises(TypeError, match="target_sizes must be a 1-D array of int64 sizes"):
        _core.alignment_scores(["a"], ["b"], np.array([20.5]), g, 1, auto)
    with pytest.raises(ValueError, match="target_sizes must be a 1-D array of int64 sizes"):
        _core.alignment_scores(["a"], ["b"], np.int64(20), g, 1, auto)
    with pytest.raises(TypeError, match="threads must be an int or None"):
        _core.compressed_sizes(["a"], g, 1, auto, threads=1.0)


def test_deeply_nested_json_names_file_and_line(tmp_path):
    # item 15: RecursionError escaped from score_jsonl
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "ok"}\n' + '{"text": "x", "meta": ' + "[" * 200000 + "]" * 200000 + "}\n")
    with pytest.raises(ValueError, match=r"deep\.jsonl, line 2: not a valid JSON record \(nested too deeply"):
        zipfit.score_jsonl(path, ["t"])
    from ccomp.io import iter_jsonl
    with pytest.raises(ValueError, match=r"deep\.jsonl, line 2: .*nested too deeply"):
        list(iter_jsonl(path))


def test_jsonl_hostile_values_name_file_and_line(tmp_path):
    from ccomp.io import iter_jsonl, iter_jsonl_texts

    path = tmp_path / "h.jsonl"
    path.write_text('{"text": "ok"}\n{"text": NaN}\n')
    with pytest.raises(ValueError, match=r"h\.jsonl, line 2: not a valid JSON record \(NaN is not valid JSON\)"):
        list(iter_jsonl(path))
    path.write_text('{"text": "ok", "x": 1e999}\n')
    with pytest.raises(ValueError, match=r"h\.jsonl, line 1: .*number 1e999 is out of the float range"):
        list(iter_jsonl(path))
    path.write_text('{"text": "ok", "x": ' + "7" * 5000 + "}\n")
    with pytest.raises(ValueError, match=r"h\.jsonl, line 1: not a valid JSON record"):
        list(iter_jsonl(path))
    path.write_text('{"text": "ok"}\n\n{"text": "bad \\ud800"}\n')
    with pytest.raises(ValueError, match=r"h\.jsonl, line 3: field 'text' is not valid Unicode"):
        zipfit.score_jsonl(path, ["t"])
    path.write_bytes(b'{"text": "\xff"}\n')
    with pytest.raises(ValueError, match=r"h\.jsonl, line 1: not a valid JSON record"):
        list(iter_jsonl_texts(path))
    with pytest.raises(TypeError, match="key must be a str"):
        iter_jsonl_texts(path, key=1)
    with pytest.raises(TypeError, match="path must be a str or os.PathLike, got int"):
        iter_jsonl(3)
    with pytest.raises(TypeError, match="key must be a str"):
        zipfit.score_jsonl(path, ["t"], key=None)
