"""ZIP-FIT on a Dask cluster: score a Dask bag or DataFrame partition by partition.

Each partition is scored by the same C core as :func:`ccomp.zipfit.alignment_scores`
on the worker that holds it, so the scores equal the local call's exactly.
Targets are sent to the workers once (as a delayed object)::

    import dask.bag as db
    from ccomp.zipfit import dask as zdask
    bag = db.read_text("s3://.../*.jsonl").map(json.loads).pluck("text")
    scores = zdask.alignment_scores(bag, targets, level=1).compute()    # numpy array, input order
"""
import numpy as np

from .. import _args
from . import _Scorer, _check_iterable, top_k_indices

__all__ = ["alignment_scores", "select_top_k"]


def _score_partition(texts, targets, compressor, level, threads, engine):
    texts = list(texts)
    if not texts:
        return np.zeros(0, dtype=np.float64)
    return _Scorer(targets, compressor, level, threads, engine).score(texts, 0)


def alignment_scores(collection, targets, key=None, compressor="gzip", level=None, threads=None, engine="auto"):
    """Lazy ZIP-FIT scores of a Dask collection, in its order.

    ``collection`` is a ``dask.bag.Bag`` of texts (or of dicts, with ``key``), a
    ``dask.dataframe.Series`` of texts, or a ``dask.dataframe.DataFrame`` with the
    text column ``key``.  Returns a ``dask.array.Array`` of float64 scores; call
    ``.compute()`` to get a NumPy array.
    """
    import dask
    import dask.array as da
    import dask.bag as db

    _check_iterable(targets, "targets")
    if threads is not None:  # None: each worker uses all of its cores
        _args.threads(threads)
    if key is not None and not isinstance(key, str):
        raise TypeError(f"key must be a str (a field or column name), got {type(key).__name__}")
    targets = list(targets)
    if not targets:
        raise ValueError("the target set is empty: ZIP-FIT needs at least one target text")
    _Scorer(targets, compressor, level, 1, engine)  # validate parameters before building the graph
    if isinstance(collection, db.Bag):
        bag = collection.pluck(key) if key is not None else collection
        parts = bag.to_delayed()
    else:
        import dask.dataframe as dd

        if isinstance(collection, dd.DataFrame):
            if key is None:
                raise ValueError("key= must name the text column of the DataFrame")
            collection = collection[key]
        if not isinstance(collection, dd.Series):
            raise TypeError(f"expected a dask Bag, Series or DataFrame, got {type(collection).__name__}")
        parts = collection.to_delayed()
    shared = dask.delayed(targets, traverse=False)
    score = dask.delayed(_score_partition, pure=True)
    arrays = [da.from_delayed(score(p, shared, compressor, level, threads, engine), shape=(np.nan,),
                              dtype=np.float64) for p in parts]
    if not arrays:
        return da.zeros(0, dtype=np.float64)
    return da.concatenate(arrays)


def select_top_k(collection, targets, k, key=None, compressor="gzip", level=None, threads=None, engine="auto"):
    """Scores the collection on the cluster and returns ``(indices, scores)`` of the k best, best first."""
    k = _args.integer("k", k, 0)
    scores = alignment_scores(collection, targets, key=key, compressor=compressor, level=level, threads=threads,
                              engine=engine).compute()
    idx = top_k_indices(scores, k)
    return idx, scores[idx]
