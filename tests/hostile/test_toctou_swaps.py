# ruff: noqa: F811  (pytest fixtures imported from hostile_helpers are parameters here)
"""Issue 29, item 10: what is checked is what is hashed (time of check, time of use).

Each case swaps a file between the moment repro checks it and the moment it
would read it, as a racing attacker would, by hooking the step in between:

- the weights beside a lock (`verify --weights`): checked with `O_NOFOLLOW` and
  `fstat`, then replaced by a regular file holding the outside secret. The digest
  must be the checked file's (it matches the lock: exit 0), never the secret's.
  When the checked weights differ from the lock, their tensors are read through
  that descriptor too: swapping the locked weights back in after the check
  changes nothing in the report.
- a data file after the walk took its stat: replaced by a link to the secret, or
  its folder by a link to a folder outside. Hashing opens every component beneath
  the root with `O_NOFOLLOW`, sees the new link, resolves it and refuses it
  (exit 2, "resolves outside the project root").

`guard` asserts that the secret's digest reaches no output and nothing outside is
written; each run must take under 10 s.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hostile_helpers import Guard, Outcome, guard, no_hang, project, trained  # noqa: F401

from repro.source import hashtree, walk
from repro.verify import verifier as verify_run

DATA = "repro/examples/digits/digits.csv"




def after(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, swap: Callable[[], None]) -> list[int]:
    """Run `swap` right after the first call of `owner.name` returns (the check); how many swaps happened."""
    real = getattr(owner, name)
    done: list[int] = []

    def hooked(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        if not done:
            swap()
            done.append(1)
        return out

    monkeypatch.setattr(owner, name, hooked)
    return done


def test_weights_swapped_after_the_check_are_not_the_ones_hashed(project: Path, guard: Guard,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    weights = project / "out" / "model.safetensors"
    lock = project / "out" / "repro.lock"

    def swap() -> None:  # a regular file this time (a link would be refused by name anyway)
        staged = weights.with_name("staged.tmp")
        shutil.copyfile(guard.secret, staged)
        os.replace(staged, weights)

    swaps = after(monkeypatch, verify_run, "open_regular", swap)
    r = guard.run("verify", "--inputs-only", "--quiet", "--weights", str(weights), str(lock))
    assert swaps and weights.read_bytes() == guard.secret.read_bytes()  # the swap did happen
    assert r.code == 0, r.text  # the checked file, which the lock describes, was the one hashed


def test_weights_tensors_are_read_from_the_checked_file(project: Path, guard: Guard,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked: weights with one tensor edited. Then the locked weights are swapped back in by name.

    Reopened by name, the tensors would all match the lock ("only the file's header
    differs"); read through the checked descriptor, the edited tensor is named.
    """
    from safetensors.numpy import load_file, save_file

    weights = project / "out" / "model.safetensors"
    pristine = project / "pristine.tmp"
    shutil.copyfile(weights, pristine)
    tensors = load_file(str(weights))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(weights), metadata={"format": "pt"})

    swaps = after(monkeypatch, verify_run, "open_regular", lambda: os.replace(pristine, weights))
    r = guard.run("verify", "--inputs-only", "--weights", str(weights), str(project / "out" / "repro.lock"))
    assert swaps
    assert r.code == 1, r.text
    assert name in r.out and "only the file's header differs" not in r.out, r.out


@pytest.mark.parametrize("what", ["file", "folder"])
def test_hash_refuses_a_link_swapped_in_after_the_walk(project: Path, guard: Guard, monkeypatch: pytest.MonkeyPatch,
                                                       what: str) -> None:
    target = project / DATA
    shutil.copyfile(guard.secret, guard.outside / "digits.csv")  # outside, a file of the same name holds the secret

    def swap() -> None:
        if what == "file":
            target.unlink()
            os.symlink(guard.secret, target)
        else:  # the whole folder
            shutil.rmtree(target.parent)
            os.symlink(guard.outside, target.parent)

    swaps = after(monkeypatch, walk, "locate_patterns", swap)
    r = guard.run("hash", "--root", str(project), str(target.parent))
    assert swaps
    assert r.code == 2 and "resolves outside the project root" in r.err, r.text


def test_verify_refuses_a_link_swapped_in_after_the_stat(project: Path, guard: Guard,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock's list of paths is stat'ed (`locate`), then read: the same swap in between is refused."""
    target = project / DATA

    def swap() -> None:
        target.unlink()
        os.symlink(guard.secret, target)

    swaps = after(monkeypatch, hashtree, "locate", swap)
    r = guard.run("verify", "--inputs-only", "--quiet", str(project / "out" / "repro.lock"))
    assert swaps
    assert r.code == 2 and "resolves outside the project root" in r.err, r.text
