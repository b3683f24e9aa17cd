"""The contract every selection method must pass: subclass SelectionContract in tests/selection.

Set ``method`` (the registry name) and ``options`` (keyword options for a small, fast run).
"""

from __future__ import annotations

import inspect
import sys
from typing import Any, ClassVar

import numpy as np
import pytest

from bilaf.errors import BilafError
from bilaf.selection import SelectionError, get_method, select
from bilaf.store import StoreError


def blobs(n: int = 400, d: int = 16, centres: int = 8, seed: int = 0) -> np.ndarray:
    """Gaussian blobs: clustered, raw-scale float32 features like a backbone's."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 4, size=(centres, d))
    labels = rng.integers(0, centres, size=n)
    return (means[labels] + rng.normal(0, 1, size=(n, d))).astype(np.float32)


class SelectionContract:
    method: ClassVar[str]
    options: ClassVar[dict[str, Any]] = {}
    budget: ClassVar[int] = 40
    # Does every pick differ? (Only BiLAF's reference mode, the official code, may repeat one.)
    unique: ClassVar[bool] = True
    # Option of the method -> the tests (of the subclass's module or class) that exercise it;
    # `device` is the contract's own test_option_device.
    option_tests: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Does the method take already labeled samples? (BiLAF's reference mode refuses them.)
    takes_labeled: ClassVar[bool] = True

    def test_every_option_has_a_test(self):
        params = inspect.signature(get_method(self.method)).parameters
        options = set(params) - {"features", "budget", "seed", "device"}
        assert set(self.option_tests) == options, "option_tests must name a test per option"
        module = sys.modules[type(self).__module__]
        for option, tests in self.option_tests.items():
            missing = [n for n in tests if not (hasattr(module, n) or hasattr(self, n))]
            assert tests and not missing, f"{option}: no test named {missing or '(none)'}"

    def test_option_device(self):
        if "device" not in inspect.signature(get_method(self.method)).parameters:
            pytest.skip(f"{self.method} has no device option")
        feats = blobs()
        on_cpu = {**self.options, "device": "cpu"}
        picked = select(self.method, feats, self.budget, 0, **on_cpu)
        np.testing.assert_array_equal(picked, self.run(feats))  # CI has no GPU: the same device
        with pytest.raises(BilafError, match="'warp-drive' is not a torch device"):
            select(self.method, feats, self.budget, 0, **{**on_cpu, "device": "warp-drive"})

    def run(self, features: Any, budget: int | None = None, seed: int = 0) -> np.ndarray:
        return select(
            self.method, features, self.budget if budget is None else budget, seed, **self.options
        )

    def test_labeled_samples_are_never_picked(self):
        feats = blobs()
        labeled = np.arange(3, 400, 9)  # 45 rows spread over the pool
        if not self.takes_labeled:
            with pytest.raises(SelectionError, match="labeled"):
                select(self.method, feats, self.budget, 0, labeled=labeled, **self.options)
            return
        picked = select(self.method, feats, self.budget, 0, labeled=labeled, **self.options)
        assert picked.shape == (self.budget,) and not np.isin(picked, labeled).any()
        assert np.unique(picked).size == self.budget or not self.unique
        again = select(self.method, feats, self.budget, 0, labeled=labeled, **self.options)
        np.testing.assert_array_equal(picked, again)
        if "labeled" not in inspect.signature(get_method(self.method)).parameters:
            rest = np.setdiff1d(np.arange(400), labeled)  # as if they were not in the pool
            np.testing.assert_array_equal(picked, rest[self.run(feats[rest])])
        with pytest.raises(SelectionError, match="exceeds the pool size 60 less its 30 labeled"):
            select(self.method, feats[:60], 31, 0, labeled=np.arange(30), **self.options)

    def test_picks_do_not_pile_up_in_storage_order(self):
        """A pool stored class by class (as an image folder is): the picks spread over it, as
        they would over any order; a greedy breaking ties by lowest id walks the first rows."""
        feats = blobs()
        order = np.argsort(np.argmin(((feats[:, None] - feats[None, :8]) ** 2).sum(-1), 1))
        picked = self.run(feats[order], budget=self.budget)
        first_quarter = (picked < feats.shape[0] // 4).mean()
        assert first_quarter < 0.5, f"{first_quarter:.0%} of the picks in the first quarter"

    def test_exact_budget_unique_in_range(self):
        feats = blobs()
        picked = self.run(feats)
        assert picked.dtype == np.int64
        assert picked.shape == (self.budget,)
        assert np.unique(picked).size == self.budget or not self.unique
        assert picked.min() >= 0 and picked.max() < feats.shape[0]

    def test_deterministic_for_a_seed(self):
        feats = blobs()
        np.testing.assert_array_equal(self.run(feats, seed=3), self.run(feats, seed=3))

    def test_same_result_from_npy_and_zarr(self, tmp_path):
        import zarr

        feats = blobs()
        np.save(tmp_path / "f.npy", feats)
        group = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
        group.create_array("features", data=feats, chunks=(128, feats.shape[1]))
        expected = self.run(feats)
        np.testing.assert_array_equal(self.run(str(tmp_path / "f.npy")), expected)
        np.testing.assert_array_equal(self.run(str(tmp_path / "f.zarr")), expected)

    def test_store_with_a_lost_chunk_is_refused(self, tmp_path):
        import zarr

        feats = blobs()
        group = zarr.open_group(str(tmp_path / "f.zarr"), mode="w")
        group.create_array("features", data=feats, chunks=(128, feats.shape[1]))
        (tmp_path / "f.zarr" / "features" / "c" / "1" / "0").unlink()  # zarr would read zeros
        with pytest.raises(StoreError, match=r"lost chunk files for rows 128\.\.255 "):
            self.run(str(tmp_path / "f.zarr"))

    def test_budget_equal_to_pool(self):
        if not self.unique:
            pytest.skip("picks may repeat, so they need not cover the pool")
        feats = blobs(n=self.budget)
        assert np.unique(self.run(feats, budget=self.budget)).size == self.budget

    @pytest.mark.parametrize("bad", [np.nan, np.inf])
    def test_non_finite_features_rejected(self, bad):
        feats = blobs()
        feats[17, 3] = bad
        with pytest.raises(SelectionError, match="row 17"):
            self.run(feats)

    def test_budget_over_pool_rejected(self):
        with pytest.raises(SelectionError, match="exceeds the pool"):
            self.run(blobs(n=30), budget=31)

    @pytest.mark.parametrize("budget", [0, -5])
    def test_non_positive_budget_rejected(self, budget):
        with pytest.raises(SelectionError, match="at least 1"):
            self.run(blobs(), budget=budget)

    @pytest.mark.parametrize("shape", [(0, 8), (10, 0)])
    def test_empty_features_rejected(self, shape):
        with pytest.raises(SelectionError, match="empty"):
            self.run(np.zeros(shape, dtype=np.float32))

    def test_one_dimensional_features_rejected(self):
        with pytest.raises(SelectionError, match="2-D"):
            self.run(np.zeros(50, dtype=np.float32))
