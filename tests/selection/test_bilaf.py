"""BiLAF boundary selection: the official outputs index for index (reference mode), the paper's
guarantees (paper mode), errors, and the fast code's internal paths giving the same picks. Held
equal to the plain transcription in test_bilaf_plain.py; distance building blocks in
test_bilaf_distances.py, denoising and picking parts in test_bilaf_parts.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from bilaf.selection import SelectionError, select
from bilaf.selection.bilaf import Limits, select_boundary
from bilaf.selection.bilaf.distances import prepare
from tests.selection.contract import SelectionContract, blobs

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "reference"
CASES = sorted(FIXTURES.glob("*/boundary_B*.json"))
CASE_IDS = [f"{p.parent.name}/{p.stem}" for p in CASES]

# Jaccard overlap |paper ∩ reference| / |paper ∪ reference| measured on each fixture (paper mode
# with the fixture's k, p_in, p_rm, delta and cores, raw features). Paper mode fixes the density
# bug, scores against every opponent class and never repeats a pick, so on these small pools it
# keeps about 40-85% of the official picks.
PAPER_OVERLAP = {
    "blobs4k/boundary_B100": 0.538,
    "blobs4k/boundary_B400": 0.384,
    "imbalanced6k/boundary_B300": 0.575,
    "imbalanced6k/boundary_B600": 0.427,
    "tinyclusters/boundary_B150": 0.863,
    "tinyclusters/boundary_B300": 0.744,
}


def load_case(path: Path) -> tuple[np.ndarray, dict]:
    case = json.loads(path.read_text())
    return np.load(path.parent / "features.npy"), case


def case_params(case: dict) -> dict:
    return {name: case[name] for name in ("k", "p_in", "p_rm", "delta")}


def run_case(feats: np.ndarray, case: dict, mode: str, **extra) -> np.ndarray:
    return select(
        "bilaf",
        feats,
        case["budget"],
        0,
        cores=case["cores"],
        mode=mode,
        **case_params(case),
        **extra,
    )


def run_limited(feats: np.ndarray, case: dict, mode: str, **limits: int) -> np.ndarray:
    """The fixture case through :func:`select_boundary` with some :class:`Limits` changed."""
    cores = np.asarray(case["cores"], dtype=np.int64)
    return select_boundary(
        feats, cores, case["budget"], mode=mode, limits=Limits(**limits), **case_params(case)
    )[0]


BILAF_OPTION_TESTS = {
    "cores": ("test_paper_mode_on_fixtures", "test_reference_mode_matches_the_official_code"),
    "n_cores": ("test_n_cores_takes_the_seeds_activeft_cores",),
    "mode": ("test_paper_mode_on_fixtures", "test_reference_mode_matches_the_official_code"),
    "normalize": ("test_normalize_equals_running_on_normalised_features",),
    "labeled": ("test_labeled_samples_are_never_picked", "test_labeled_samples_lead_classes"),
    # the scores equal the plain transcription's too (test_bilaf_plain)
    "return_scores": ("test_scores_come_with_the_same_picks",),
    "core_method": ("test_core_method_picks_the_cores",),
    # k, p_in, p_rm, delta: the transcriptions (test_bilaf_plain) vary them; the fixtures too
    **{
        key: ("test_paper_mode_on_fixtures", "test_bad_options_rejected")
        for key in ("k", "p_in", "p_rm", "delta")
    },
}


class TestBilafPaper(SelectionContract):
    method = "bilaf"
    options: ClassVar[dict[str, Any]] = {"n_cores": 8, "mode": "paper"}
    option_tests = BILAF_OPTION_TESTS


class TestBilafReference(SelectionContract):
    """The official code's mode: every contract check applies but distinct picks (it may repeat
    one, as the official code does)."""

    method = "bilaf"
    options: ClassVar[dict[str, Any]] = {"n_cores": 8, "mode": "reference"}
    unique = False
    takes_labeled = False
    option_tests = BILAF_OPTION_TESTS


def test_n_cores_takes_the_seeds_activeft_cores():
    feats = blobs()
    cores = select("activeft", feats, 8, 3)
    picked = select("bilaf", feats, 40, 3, n_cores=8)
    np.testing.assert_array_equal(picked, select("bilaf", feats, 40, 3, cores=cores))
    assert set(cores) <= set(picked)
    with pytest.raises(SelectionError, match="n_cores 5 disagrees with the 8 cores"):
        select("bilaf", feats, 40, 3, n_cores=5, cores=cores)


@pytest.mark.parametrize("path", CASES, ids=CASE_IDS)
def test_reference_mode_matches_the_official_code(path):
    feats, case = load_case(path)
    np.testing.assert_array_equal(run_case(feats, case, "reference"), case["selected"])


def test_reference_mode_repeats_a_pick_like_the_official_code():
    feats, case = load_case(FIXTURES / "imbalanced6k" / "boundary_B600.json")
    picked = run_case(feats, case, "reference")
    assert np.unique(picked).size == picked.size - 1


@pytest.mark.parametrize("path", CASES, ids=CASE_IDS)
def test_paper_mode_on_fixtures(path):
    feats, case = load_case(path)
    picked = run_case(feats, case, "paper")
    assert picked.dtype == np.int64 and picked.size == case["budget"]
    assert np.unique(picked).size == picked.size
    assert set(case["cores"]) <= set(picked.tolist())
    overlap = len(set(picked.tolist()) & set(case["selected"])) / len(
        set(picked.tolist()) | set(case["selected"])
    )
    assert overlap == pytest.approx(PAPER_OVERLAP[f"{path.parent.name}/{path.stem}"], abs=0.05)


def test_paper_mode_is_deterministic_on_a_fixture():
    feats, case = load_case(CASES[0])
    np.testing.assert_array_equal(run_case(feats, case, "paper"), run_case(feats, case, "paper"))


def test_matrix_free_path_gives_the_same_picks():
    """Huge classes compute distance blocks on the fly; the result must not change."""
    feats, case = load_case(FIXTURES / "tinyclusters" / "boundary_B300.json")
    expected = {mode: run_case(feats, case, mode) for mode in ("reference", "paper")}
    for mode, picked in expected.items():
        got = run_limited(feats, case, mode, store_limit=0, block_elements=64)
        np.testing.assert_array_equal(got, picked)


@pytest.mark.parametrize("mode", ["reference", "paper"])
def test_denoising_merge_paths_agree_on_a_fixture(mode):
    """Large classes merge only entries below a row's worst; merging every entry gives the same."""
    feats, case = load_case(FIXTURES / "imbalanced6k" / "boundary_B600.json")
    expected = run_case(feats, case, mode)
    np.testing.assert_array_equal(run_limited(feats, case, mode, dense_merge=0), expected)
    np.testing.assert_array_equal(run_limited(feats, case, mode, dense_merge=1 << 40), expected)


def test_normalize_equals_running_on_normalised_features():
    feats, case = load_case(FIXTURES / "tinyclusters" / "boundary_B150.json")
    unit = prepare(feats, normalize=True)
    for mode in ("reference", "paper"):
        np.testing.assert_array_equal(
            run_case(feats, case, mode, normalize=True), run_case(unit, case, mode)
        )


def test_duplicates_of_cores_keep_paper_mode_valid():
    feats = blobs(n=300, seed=4)
    cores = [3, 50, 120, 200]
    feats[[10, 11, 250]] = feats[3]  # copies of a core, before and after it
    feats[60] = feats[50]
    feats[77] = feats[120]
    feats[200] = feats[120]  # two cores with identical features
    for budget in (4, 40, 300):
        picked = select("bilaf", feats, budget, 0, cores=cores, mode="paper")
        assert picked.size == budget and np.unique(picked).size == budget
        assert set(cores) <= set(picked.tolist())
    with pytest.raises(SelectionError, match="same features"):
        select("bilaf", feats, 40, 0, cores=cores, mode="reference")


def test_paper_mode_with_a_single_core():
    """No opponent class at all: every score is the ratio's limit, picks follow the removal."""
    picked = select("bilaf", blobs(), 30, 0, cores=[5], mode="paper")
    assert picked[0] == 5 and np.unique(picked).size == 30


def test_paper_mode_tops_up_when_classes_run_dry():
    feats = blobs(n=60, seed=5)
    picked = select("bilaf", feats, 58, 0, cores=[0, 1, 2], mode="paper", p_rm=0.5)
    assert picked.size == 58 and np.unique(picked).size == 58
    assert {0, 1, 2} <= set(picked.tolist())


@pytest.mark.parametrize(
    ("options", "budget", "message"),
    [
        ({"cores": [0, 1, 2, 3, 4]}, 4, "budget 4 < 5 cores: raise the budget"),
        ({"n_cores": 50}, 40, "budget 40 < 50 cores: raise the budget"),
        ({"cores": [0, 1, 1]}, 40, "more than once"),
        ({"cores": [0, 400]}, 40, "outside the pool"),
        ({"cores": [0, 1], "n_cores": 3}, 40, "disagrees"),
        ({}, 40, "cores=\\[...\\] or n_cores"),
        ({"cores": [0, 1], "mode": "official"}, 40, "unknown bilaf mode"),
        ({"cores": [0, 1], "k": 0}, 40, "k \\(density neighbours\\)"),
        ({"cores": [0, 1], "p_in": 0}, 40, "p_in must be"),
        ({"cores": [0, 1], "p_rm": 1.0}, 40, "p_rm must be"),
        ({"cores": [0, 1], "delta": 0.9}, 40, "delta must be"),
        ({"cores": [0], "mode": "reference"}, 40, "at least 2 cores"),
        ({"cores": [0, 1], "device": "nonsense"}, 40, "not a torch device"),
    ],
)
def test_bad_options_rejected(options, budget, message):
    with pytest.raises(SelectionError, match=message):
        select("bilaf", blobs(), budget, 0, **options)


def test_reference_mode_refuses_a_class_that_denoising_emptied():
    rng = np.random.default_rng(1)
    sizes, centres = (100, 100, 100, 12), ((0, 0), (50, 0), (0, 50), (50, 50))
    feats = np.vstack(
        [rng.normal(c, 1, size=(m, 2)) for m, c in zip(sizes, centres, strict=True)]
    ).astype(np.float32)
    cores = [0, 100, 200, 300]
    # p_rm = 0.95 keeps int(100·0.05) = 5 and int(12·0.05) = 0 members: a = ⌊11·5/15⌋ = 3 each
    # and the remainder 2 both to the emptied class, which must pick 1 beyond its core
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no numpy warning on the way to the message
        with pytest.raises(SelectionError, match="keeps none of the 12 members of the class of"):
            select("bilaf", feats, 11, 0, cores=cores, mode="reference", p_rm=0.95)
        assert select("bilaf", feats, 11, 0, cores=cores, p_rm=0.95).size == 11


def test_reference_mode_refuses_a_class_without_budget():
    rng = np.random.default_rng(1)
    sizes, centres = (300, 95, 5), ((0, 0), (50, 0), (0, 50))
    feats = np.vstack(
        [rng.normal(c, 1, size=(m, 2)) for m, c in zip(sizes, centres, strict=True)]
    ).astype(np.float32)
    # a = ⌊3·|U|/Σ|U|⌋ = [2, 0, 0], the remainder goes to class 1: class 2 gets nothing
    with pytest.raises(SelectionError, match="gets no budget"):
        select("bilaf", feats, 3, 0, cores=[0, 300, 395], mode="reference")
    assert select("bilaf", feats, 3, 0, cores=[0, 300, 395]).size == 3


@pytest.mark.parametrize("path", CASES, ids=CASE_IDS)
def test_paper_mode_distance_paths_agree(path):
    """Paper mode computes a small class's whole matrix and a large class's denoising blocks
    only; sending every class down either path must give the same picks."""
    feats, case = load_case(path)
    blocks = run_limited(feats, case, "paper", whole_matrix=0)
    np.testing.assert_array_equal(run_limited(feats, case, "paper", whole_matrix=1 << 40), blocks)


def test_labeled_samples_lead_classes():
    """Labeled samples are cores already: BiLAF runs with them before its own cores, on the
    budget plus them, and leaves them out; their classes get boundary picks too."""
    from bilaf.selection.bilaf.plain import plain_bilaf
    from bilaf.selection.bilaf.pseudo_classes import nearest_cores

    feats = blobs(n=300, d=8)
    labeled, cores = np.array([5, 77, 150]), np.array([10, 40, 90, 200, 260])
    picked = select("bilaf", feats, 30, 0, cores=cores, labeled=labeled)
    all_cores = np.concatenate([labeled, cores])
    options = {"k": 10, "p_in": 0.1, "p_rm": 0.1, "delta": 1.1}
    whole = plain_bilaf(feats, all_cores, 33, mode="paper", **options)
    np.testing.assert_array_equal(picked, [i for i in whole if i not in labeled])
    nearest, _ = nearest_cores(feats[picked], feats[all_cores], 1)
    assert set(nearest[:, 0]) & {0, 1, 2}  # picks in the labeled samples' classes
    with pytest.raises(SelectionError, match="cores include labeled"):
        select("bilaf", feats, 30, 0, cores=cores, labeled=np.array([10]))


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_scores_come_with_the_same_picks(mode):
    """A boundary score per pick, NaN exactly at the cores; the picks do not change. A method
    without scores gives NaN for every pick."""
    feats, cores = blobs(), np.array([3, 50, 120, 200, 333])
    picked, scores = select("bilaf", feats, 40, 0, cores=cores, mode=mode, with_scores=True)
    np.testing.assert_array_equal(picked, select("bilaf", feats, 40, 0, cores=cores, mode=mode))
    np.testing.assert_array_equal(np.isnan(scores), np.isin(picked, cores))
    assert np.isfinite(scores[~np.isnan(scores)]).all()
    ids, none = select("random", feats, 10, 0, with_scores=True)
    assert ids.shape == none.shape == (10,) and np.isnan(none).all()


@pytest.mark.parametrize("core_method", ["activeft", "kmeans", "fds", "random"])
def test_core_method_picks_the_cores(core_method):
    """n_cores with a core method equals BiLAF from that method's own selection of K."""
    feats = blobs()
    cores = select(core_method, feats, 8, 2)
    picked = select("bilaf", feats, 40, 2, n_cores=8, core_method=core_method)
    np.testing.assert_array_equal(picked, select("bilaf", feats, 40, 2, cores=cores))
    with pytest.raises(SelectionError, match="core_method 'typiclust'"):
        select("bilaf", feats, 40, 2, n_cores=8, core_method="typiclust")
