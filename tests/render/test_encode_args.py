"""Encoder arguments: exact rational frame rates, identical options for every chunk, lossless detection."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from helios_kit.render.encode import is_lossless, output_args, rate


@given(st.floats(min_value=0.01, max_value=1000, allow_nan=False, allow_infinity=False))
def test_rate_is_an_exact_fraction_close_to_fps(fps: float) -> None:
    numerator, denominator = (int(part) for part in rate(fps).split("/"))
    assert denominator > 0
    assert abs(Fraction(numerator, denominator) - Fraction(fps)) <= Fraction(1, 10**6)


def test_common_rates() -> None:
    assert rate(30) == "30/1"
    assert rate(29.97) == "2997/100"
    assert rate(30000 / 1001) == "30000/1001"
    assert rate(23.976) == "2997/125"


@given(
    st.sampled_from(["libx264", "libx265", "libvpx-vp9", "ffv1"]),
    st.integers(min_value=0, max_value=51),
    st.sampled_from([24.0, 25.0, 30.0, 59.94]),
    st.integers(min_value=1, max_value=10**6),
    st.integers(min_value=1, max_value=10**6),
)
def test_chunks_get_identical_codec_options(codec: str, crf: int, fps: float, count_a: int, count_b: int) -> None:
    a = output_args(video_codec=codec, pixel_format="yuv420p", crf=crf, fps=fps, frame_count=count_a, suffix=".mp4")
    b = output_args(video_codec=codec, pixel_format="yuv420p", crf=crf, fps=fps, frame_count=count_b, suffix=".mp4")
    assert a.pop("frames:v") == count_a and b.pop("frames:v") == count_b
    assert a == b
    assert a["force_key_frames"] == "expr:eq(n,0)" and a["fps_mode"] == "cfr"
    assert a["movflags"] == "+faststart"


def test_lossless_detection() -> None:
    assert is_lossless("libx264rgb", 0) and is_lossless("libx264", 0) and is_lossless("ffv1", 18)
    assert not is_lossless("libx264", 18) and not is_lossless("libvpx-vp9", 0)
    assert (
        output_args(video_codec="libx264", pixel_format="yuv420p", crf=0, fps=30, frame_count=1, suffix=".mkv")["qp"]
        == 0
    )


def test_x264_gets_superfast_search_and_keeps_veryfast_lookahead() -> None:
    def args(codec: str) -> dict[str, object]:
        return output_args(video_codec=codec, pixel_format="yuv420p", crf=18, fps=30, frame_count=1, suffix=".mp4")

    for codec in ("libx264", "libx264rgb"):
        assert args(codec)["preset"] == "veryfast"
        params = dict(item.split("=") for item in str(args(codec)["x264-params"]).split(":"))
        assert params == {"me": "dia", "subme": "1", "partitions": "i8x8,i4x4"}
    assert "x264-params" not in args("libx265") and args("libx265")["preset"] == "veryfast"
    assert "x264-params" not in args("libvpx-vp9")
