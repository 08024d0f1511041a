"""Regenerate the timeline example's media (committed, so the example renders offline out of the box).

Run from anywhere: ``python examples/timeline/assets/make_assets.py`` (needs numpy and ffmpeg with libvpx and
libvorbis). Makes ``landscape.png`` (a posterised sunset drawn with numpy), ``clip.webm`` (a 3 s VP9
Mandelbrot zoom, ~140 KB) and ``soundtrack.ogg`` (a 6 s Vorbis arpeggio over a drone, made with aevalsrc).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
W, H = 640, 360


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True)


def landscape() -> np.ndarray:
    """A sunset: banded sky, a sun with a halo, three ridges of mountains, a lake reflecting the sun."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    sky_top, sky_bottom = np.array([26, 16, 53]), np.array([255, 150, 96])
    u = np.clip(y / (H * 0.62), 0, 1)[..., None]
    img = sky_top * (1 - u) + sky_bottom * u
    img = np.round(img / 12) * 12  # posterise the sky into bands
    d = np.hypot(x - W * 0.62, y - H * 0.5)
    halo = np.clip(1 - d / 160, 0, 1)[..., None] ** 2
    img = img * (1 - 0.5 * halo) + np.array([255, 214, 150]) * 0.5 * halo
    img[d < 46] = [255, 236, 196]
    rng = np.random.default_rng(7)
    ridges = [(0.55, 40, [92, 46, 104]), (0.64, 30, [58, 30, 82]), (0.72, 22, [32, 18, 52])]
    for base, amp, colour in ridges:
        phases = rng.uniform(0, 2 * np.pi, 3)
        xs = np.arange(W)
        top = H * base - amp * (
            0.6 * np.sin(xs / 90 + phases[0]) + 0.3 * np.sin(xs / 37 + phases[1]) + 0.1 * np.sin(xs / 13 + phases[2])
        )
        img[y > top[None, :].repeat(H, 0)] = colour
    lake = y > H * 0.8
    img[lake] = [40, 24, 70]
    shimmer = lake & (np.abs(x - W * 0.62) < 60 - (y - H * 0.8) * 0.4) & (np.sin(y * 1.3) > 0.2)
    img[shimmer] = [255, 190, 130]
    return np.clip(img, 0, 255).astype(np.uint8)


def main() -> None:
    raw = HERE / "landscape.rgb"
    raw.write_bytes(landscape().tobytes())
    ffmpeg(
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{W}x{H}",
        "-i",
        str(raw),
        "-frames:v",
        "1",
        str(HERE / "landscape.png"),
    )
    raw.unlink()
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "mandelbrot=s=320x180:rate=30:start_scale=3:end_scale=0.05:end_pts=90"
        ":start_x=-0.743643887037151:start_y=0.131825904205330,format=yuv420p",
        "-t",
        "3",
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        "360k",
        "-maxrate",
        "400k",
        "-deadline",
        "good",
        "-cpu-used",
        "4",
        "-row-mt",
        "1",
        "-an",
        str(HERE / "clip.webm"),
    )
    notes = "if(lt(mod(t,2),0.5),220,if(lt(mod(t,2),1),261.63,if(lt(mod(t,2),1.5),329.63,392)))"
    expr = f"0.22*sin(2*PI*t*{notes})*exp(-7*mod(t,0.5))+0.05*sin(2*PI*110*t)+0.03*sin(2*PI*164.81*t)"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"aevalsrc='{expr}|{expr}':s=48000:d=6",
        "-af",
        "afade=t=in:d=0.3,afade=t=out:st=5.2:d=0.8",
        "-c:a",
        "libvorbis",
        "-q:a",
        "3",
        str(HERE / "soundtrack.ogg"),
    )


if __name__ == "__main__":
    main()
