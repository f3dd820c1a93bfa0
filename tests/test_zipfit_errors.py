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
    with pytest.raises(ValueError, match="unknown engine"):
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
    with pytest.raises(ValueError, match="threads must be between 1 and 4096, got 0"):
        zipfit.alignment_scores(["a"], ["b"], threads=0)
    with pytest.raises(TypeError, match="threads must be an int or None"):
        zipfit.alignment_scores(["a"], ["b"], threads="2")
    with pytest.raises(ValueError, match="k must be >= 0, got -1"):
        zipfit.select_top_k(["a"], ["b"], k=-1)
    with pytest.raises(TypeError, match="k must be an int"):
        zipfit.select_top_k(["a"], ["b"], k=2.0)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
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
