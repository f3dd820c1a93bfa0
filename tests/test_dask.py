"""Scoring on a Dask cluster with two worker processes equals the local call."""
import numpy as np
import pytest

from ccomp import zipfit

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def test_bag_and_dataframe_scores_equal_local(client, real_documents, humaneval_prompts):
    import dask.bag as db
    import dask.dataframe as dd
    import pandas as pd

    from ccomp.zipfit import dask as zdask

    targets = humaneval_prompts[:40]
    local = zipfit.alignment_scores(real_documents, targets, "gzip", 1)
    bag = db.from_sequence(real_documents, npartitions=5)
    got = zdask.alignment_scores(bag, targets, level=1).compute()
    assert np.array_equal(got, local)
    records = db.from_sequence([{"text": d, "i": i} for i, d in enumerate(real_documents)], npartitions=3)
    assert np.array_equal(zdask.alignment_scores(records, targets, key="text", level=1).compute(), local)
    df = dd.from_pandas(pd.DataFrame({"text": real_documents}), npartitions=4)
    assert np.array_equal(zdask.alignment_scores(df, targets, key="text", level=1).compute(), local)
    idx, scores = zdask.select_top_k(df["text"], targets, 5, level=1)
    assert list(idx) == list(zipfit.top_k_indices(local, 5))
    with pytest.raises(ValueError, match="target set is empty"):
        zdask.alignment_scores(bag, [])
    with pytest.raises(ValueError, match="key= must name"):
        zdask.alignment_scores(df, targets)
