import math

import numpy as np
import pytest

from bilaf.errors import InputError, check_option
from bilaf.selection import SelectionError
from bilaf.selection.base import check_option as check_method_option


@pytest.mark.parametrize(
    ("value", "kind", "bounds", "message"),
    [
        (0, int, {"low": 1}, "k must be an integer >= 1, got 0"),
        (2.5, int, {"low": 1}, "k must be an integer >= 1, got 2.5"),
        (True, int, {"low": 0}, "k must be an integer >= 0, got True"),
        (math.nan, float, {"low": 0}, "k must be a finite number >= 0, got nan"),
        (math.inf, float, {}, "k must be a finite number, got inf"),
        ("3", float, {}, "k must be a finite number, got '3'"),
        (0.0, float, {"low": 0, "open_low": True}, "k must be a finite number > 0, got 0.0"),
        (1.0, float, {"low": 0, "high": 1, "open_high": True}, r"in \[0, 1\), got 1\.0"),
        (0, float, {"low": 0, "high": 1, "open_low": True}, r"in \(0, 1\], got 0"),
        (5, int, {"high": 4}, "k must be an integer <= 4, got 5"),
        (None, int, {"low": 1}, "k must be an integer >= 1, got None"),
    ],
)
def test_a_bad_option_is_named_with_its_range(value, kind, bounds, message):
    with pytest.raises(InputError, match=message):
        check_option(value, "k", kind, **bounds)


@pytest.mark.parametrize(
    ("value", "kind", "bounds"),
    [
        (1, int, {"low": 1}),
        (np.int64(3), int, {"low": 1, "high": 3}),
        (np.float32(0.5), float, {"low": 0, "high": 1, "open_low": True}),
        (7, float, {"low": 1}),  # an integer is a number
        (None, int, {"low": 1, "optional": True}),
    ],
)
def test_a_good_option_passes(value, kind, bounds):
    check_option(value, "k", kind, **bounds)


def test_a_methods_option_is_a_selection_error():
    with pytest.raises(SelectionError, match="or None, got 0"):
        check_method_option(0, "batch_size", int, low=1, optional=True)
