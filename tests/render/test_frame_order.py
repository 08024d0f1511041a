"""The frame order of a render in lanes: claims in order, images out of order in, in order out."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_kit.render.frame_order import FrameOrder
from helios_kit.render.page import RenderCancelled


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 50),
    count=st.integers(1, 40),
    lanes=st.integers(1, 4),
    window=st.integers(1, 6),
    choices=st.lists(st.integers(0, 1000), min_size=400, max_size=400),
)
def test_every_frame_leaves_once_in_order_whatever_the_lanes_do(
    start: int, count: int, lanes: int, window: int, choices: list[int]
) -> None:
    """A model run: at each step some lane claims (when the window allows), delivers one of its claims, or
    the encoder takes; whatever the interleaving, frames leave in order, each once, with its own image."""
    order = FrameOrder(start, count, window)
    claimed: list[list[int]] = [[] for _ in range(lanes)]
    out: list[tuple[int, bytes]] = []
    next_claim, delivered = start, set()
    picks = iter(choices)
    while len(out) < count:
        pick = next(picks, 0)
        lane = pick % lanes
        action = (pick // lanes) % 3
        if action == 0 and next_claim < start + count and next_claim < start + len(out) + window:
            frame = order.claim(lane)
            assert frame == next_claim
            claimed[lane].append(frame)
            next_claim += 1
        elif action == 1 and claimed[lane]:
            frame = claimed[lane].pop(pick % len(claimed[lane]))
            order.deliver(frame, f"image {frame}".encode())
            delivered.add(frame)
        elif start + len(out) in delivered:
            out.append(order.take())
        elif next_claim < start + len(out) + window and next_claim < start + count:
            claimed[lane].append(order.claim(lane))  # type: ignore[arg-type]
            next_claim += 1
        else:  # nothing else can move: deliver the oldest claim
            owner = next(i for i, frames in enumerate(claimed) if start + len(out) in frames)
            claimed[owner].remove(start + len(out))
            order.deliver(start + len(out), f"image {start + len(out)}".encode())
            delivered.add(start + len(out))
    assert out == [(frame, f"image {frame}".encode()) for frame in range(start, start + count)]
    assert order.claim(0) is None  # all claimed


def test_a_lane_waits_while_it_is_a_window_ahead_of_the_encoder() -> None:
    order = FrameOrder(0, 10, window=2)
    assert [order.claim(0), order.claim(1)] == [0, 1]
    third: list[int | None] = []
    waiting = threading.Thread(target=lambda: third.append(order.claim(0)))
    waiting.start()
    waiting.join(0.05)
    assert waiting.is_alive() and third == []  # frame 2 is two past frame 0, which the encoder waits for
    order.deliver(0, b"0")
    assert order.take() == (0, b"0")
    waiting.join()
    assert third == [2]


def test_a_failure_reaches_the_encoder_and_stops_the_claims() -> None:
    order = FrameOrder(0, 5, window=5)
    order.claim(0)
    taken: list[BaseException] = []

    def encoder() -> None:
        try:
            order.take()
        except RuntimeError as error:
            taken.append(error)

    thread = threading.Thread(target=encoder)
    thread.start()
    order.fail(RuntimeError("lane 1 crashed"))
    order.fail(RuntimeError("a later failure"))
    thread.join()
    assert [str(error) for error in taken] == ["lane 1 crashed"]
    assert order.claim(1) is None and order.stopped


def test_a_cancel_stops_claims_and_the_encoder() -> None:
    cancel = threading.Event()
    order = FrameOrder(0, 5, window=5, cancel=cancel)
    assert order.claim(0) == 0
    cancel.set()
    order.wake()
    assert order.claim(0) is None
    with pytest.raises(RenderCancelled):
        order.take()


def test_a_solo_lane_takes_every_frame_left() -> None:
    order = FrameOrder(0, 4, window=4)
    assert order.claim(0) == 0
    assert order.go_solo(1) and not order.go_solo(0)
    assert order.claim(0) is None
    assert [order.claim(1), order.claim(1), order.claim(1), order.claim(1)] == [1, 2, 3, None]


def test_an_image_for_a_frame_not_waiting_is_refused() -> None:
    order = FrameOrder(10, 3, window=3)
    order.claim(0)
    order.deliver(10, b"a")
    with pytest.raises(ValueError, match="frame 10"):
        order.deliver(10, b"again")
    with pytest.raises(ValueError, match="frame 13"):
        order.deliver(13, b"past the end")
    assert order.take() == (10, b"a")
    with pytest.raises(ValueError, match="frame 10"):
        order.deliver(10, b"already taken")
