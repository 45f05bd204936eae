"""Tests for stlib.exercises: a right answer passes, a wrong one fails with its hint, a missing one is skipped."""

from __future__ import annotations

import pytest
import torch

from stlib import losses
from stlib.exercises import ExerciseError, check

CASES = [(torch.randn(1, 4, 5, 6),), (torch.randn(2, 3, 7, 7),)]


def test_a_correct_attempt_passes(capsys):
    def gram(f):
        b, c, h, w = f.shape
        flat = f.reshape(b, c, h * w)  # (B, C, H*W)
        return flat @ flat.transpose(1, 2) / (c * h * w)

    assert check("gram_matrix", gram, losses.gram_matrix, CASES) is True
    assert "correct on 2 case(s)" in capsys.readouterr().out


def test_a_wrong_attempt_fails_with_the_hint_and_the_case():
    def gram_without_normalisation(f):
        flat = f.flatten(2)
        return flat @ flat.transpose(1, 2)

    with pytest.raises(ExerciseError, match=r"(?s)case 1 \(tensor\(1, 4, 5, 6\)\).*Hint: divide by C\*H\*W"):
        check("gram_matrix", gram_without_normalisation, losses.gram_matrix, CASES, hint="divide by C*H*W")


def test_a_wrong_shape_is_an_exercise_error_too():
    with pytest.raises(ExerciseError, match="stlib.losses.gram_matrix"):
        check("gram_matrix", lambda f: f.flatten(2), losses.gram_matrix, CASES)


def test_an_unattempted_exercise_names_the_solution_and_does_not_fail(capsys):
    def gram(f):
        raise NotImplementedError

    assert check("gram_matrix", gram, losses.gram_matrix, CASES) is False
    assert "not attempted yet" in capsys.readouterr().out
