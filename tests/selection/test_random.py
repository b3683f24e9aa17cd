import numpy as np

from bilaf.selection import select
from tests.selection.contract import SelectionContract, blobs


class TestRandom(SelectionContract):
    method = "random"


def test_random_differs_across_seeds():
    feats = blobs()
    assert not np.array_equal(select("random", feats, 40, 0), select("random", feats, 40, 1))
