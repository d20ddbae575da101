"""Subject-level train / held-out split."""

from __future__ import annotations

import pytest

from cortexgen.split import split_subjects

SUBJECTS = [f"sub-{i:02d}" for i in range(1, 15)]


def test_fraction_is_seeded_reproducible_and_subject_level():
    split = split_subjects(SUBJECTS + ["sub-03"], held_out_fraction=0.25, seed=0)
    assert len(split.held_out) == 4 and len(split.train) == 10  # round(3.5) up
    assert sorted(split.train + split.held_out) == SUBJECTS  # sessions merged, nothing lost or doubled
    assert split == split_subjects(list(reversed(SUBJECTS)), held_out_fraction=0.25, seed=0)
    assert split != split_subjects(SUBJECTS, held_out_fraction=0.25, seed=1)


def test_listed_subjects_win_over_the_fraction():
    split = split_subjects(SUBJECTS, held_out=["02", "sub-07"], held_out_fraction=0.5)
    assert split.held_out == ("sub-02", "sub-07")
    assert "sub-02" not in split.train and len(split.train) == 12


def test_at_least_two_subjects_stay_for_training():
    assert len(split_subjects(["sub-a", "sub-b", "sub-c"], held_out_fraction=0.9).train) == 2
    assert split_subjects(["sub-a", "sub-b"], held_out_fraction=0.5).held_out == ()
    assert split_subjects(["sub-a"], held_out_fraction=0.5).train == ("sub-a",)


def test_bad_requests_are_refused():
    with pytest.raises(ValueError, match="sub-99"):
        split_subjects(SUBJECTS, held_out=["99"])
    with pytest.raises(ValueError, match="fraction"):
        split_subjects(SUBJECTS, held_out_fraction=1.0)


def test_validation_subjects_come_from_the_rest_and_leave_two_to_train():
    subjects = [f"sub-{i:02d}" for i in range(1, 11)]
    split = split_subjects(subjects, held_out=["03"], validation_fraction=0.2, seed=1)
    assert split.held_out == ("sub-03",)
    assert len(split.validation) == 2 and "sub-03" not in split.validation
    assert set(split.train) | set(split.validation) | set(split.held_out) == set(subjects)
    assert not set(split.train) & set(split.validation)
    assert split == split_subjects(subjects, held_out=["03"], validation_fraction=0.2, seed=1)
    few = split_subjects(subjects[:3], held_out=["01"], validation_fraction=0.5)
    assert len(few.train) == 2 and few.validation == ()
    assert split_subjects(subjects).validation == ()
    with pytest.raises(ValueError, match="validation_fraction"):
        split_subjects(subjects, validation_fraction=1.0)
