"""Checked exercises for the notebooks, in the style of CS231n's assignments.

A notebook cell asks the learner to write a piece of the library (the Gram matrix, the style loss, instance
normalisation, ...) as a function, then calls `check`: it runs the learner's function and the library's
reference on the same random inputs and compares them with `torch.testing.assert_close`.

- Not attempted yet (the function still raises ``NotImplementedError``): `check` says so and names the
  reference solution (``stlib`` itself is the solution: ``??losses.gram_matrix`` shows its source), so a
  notebook executed top to bottom (and nbval in CI) stays green.
- Attempted and right: one line, "correct".
- Attempted and wrong: an `ExerciseError` (an AssertionError) with the exercise's hint, the inputs' shapes and
  the size of the mismatch, so the learner knows where to look.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["ExerciseError", "check"]


class ExerciseError(AssertionError):
    """The learner's function computes something else than the reference; the message carries the hint."""


def _describe(args: Sequence[Any]) -> str:
    """Shapes of tensor arguments, reprs of the others, for the failure message."""
    return ", ".join(f"tensor{tuple(a.shape)}" if isinstance(a, torch.Tensor) else repr(a) for a in args)


def _reference_name(reference: Callable) -> str:
    module = inspect.getmodule(reference)
    name = getattr(reference, "__qualname__", getattr(reference, "__name__", repr(reference)))
    return name if module is None or module.__name__ == "__main__" else f"{module.__name__}.{name}"


def check(
    name: str,
    attempt: Callable,
    reference: Callable,
    cases: Sequence[Sequence[Any]],
    hint: str = "",
    rtol: float = 1e-4,
    atol: float = 1e-6,
    solution: str | None = None,
) -> bool:
    """Compare `attempt` with `reference` on every argument tuple in `cases`; True when done and correct.

    Returns False (after saying so) while `attempt` raises NotImplementedError; raises `ExerciseError` with
    `hint` when an output differs beyond the tolerances (float32 on both sides: the same formula).
    `solution` names the reference in messages (default: its module and name).
    """
    solution = solution or _reference_name(reference)
    for k, args in enumerate(cases, 1):
        try:
            got = attempt(*args)
        except NotImplementedError:
            print(
                f"Exercise '{name}': not attempted yet. Write it and run this cell again "
                f"(it is checked against {solution}; a collapsed solution cell follows)."
            )
            return False
        expected = reference(*args)
        try:
            torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, check_dtype=False)
        except (AssertionError, TypeError, ValueError) as err:
            detail = str(err).strip().splitlines()
            raise ExerciseError(
                f"Exercise '{name}' differs from {solution} on case {k} ({_describe(args)}): "
                f"{' '.join(line.strip() for line in detail[:3])}" + (f"\nHint: {hint}" if hint else "")
            ) from None
    print(f"Exercise '{name}': correct on {len(cases)} case(s), the same as {solution}.")
    return True
