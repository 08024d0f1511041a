"""Seeded randomness: Math.random and crypto give the same sequence from page load in every chunk and every
run (lossless renders compared pixel for pixel), and another seed gives another sequence."""

from __future__ import annotations

import pathlib

import numpy as np

from tests.render.conftest import FIXTURES, config, decode, render

W, H = 64, 48


def frames(tmp_path: pathlib.Path, name: str, start: int, count: int, seed: int = 0) -> np.ndarray:
    out = tmp_path / f"{name}.mkv"
    render(FIXTURES / "random.html", out, start, count, config(W, H, lossless=True, seed=seed))
    return decode(out, W, H)


def test_random_numbers_are_the_same_in_every_chunk_and_run(tmp_path: pathlib.Path) -> None:
    whole = frames(tmp_path, "whole", 0, 12)
    again = frames(tmp_path, "again", 0, 12)
    chunk = frames(tmp_path, "chunk", 7, 5)
    assert np.array_equal(whole, again)
    assert np.array_equal(whole[7:12], chunk)
    colours = {tuple(frame[H // 2, W // 2]) for frame in whole}
    assert len(colours) == 12  # really random from frame to frame, not a constant


def test_another_seed_draws_other_numbers(tmp_path: pathlib.Path) -> None:
    assert not np.array_equal(frames(tmp_path, "zero", 0, 4), frames(tmp_path, "seven", 0, 4, seed=7))
