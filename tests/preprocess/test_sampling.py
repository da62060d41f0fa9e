"""Which frames are read: the sampling rules and the count checks' messages."""

from __future__ import annotations

import pytest

from core.errors import InvalidInputError
from preprocess.sampling import check_count, check_sampling, sample_indices


def test_check_count_names_the_option_and_only_says_frames_when_it_counts_frames():
    with pytest.raises(InvalidInputError, match=r"^num_workers must be a positive integer, got 0$"):
        check_count(0, name="num_workers")
    with pytest.raises(InvalidInputError, match=r"seq_len must be .* \(frames per video\)"):
        check_count(-1, name="seq_len", what="frames per video")
    with pytest.raises(InvalidInputError, match="frames to read"):
        sample_indices(10, 0, "first")
    assert check_count(3, name="n") == 3
    with pytest.raises(InvalidInputError, match="got True"):
        check_count(True, name="n")


def test_uniform_spreads_with_exact_rounding():
    assert sample_indices(10, 4, "uniform") == [0, 3, 6, 9]
    assert sample_indices(5, 8, "uniform") == [0, 1, 2, 3, 4]
    assert sample_indices(100, 1, "uniform") == [0]
    assert sample_indices(7, 3, "first") == [0, 1, 2]
    with pytest.raises(InvalidInputError, match="'first', 'uniform'"):
        check_sampling("random")
