"""Conversion of job files written by the original Helios CLI into JobSpec v1 data.

Helios writes `{"metadata": {...}, "chunks": [{..., "command": "helios render ..."}], "mergeCommand": "..."}`
(or `partitions` + `merge`). Settings live only inside the command strings, so they are tokenized with
:func:`shlex.split` — never run through a shell — and the known flags are read. An unknown flag, or a command
that is not `helios render`, is an error naming the chunk and the token.
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any

from helios_kit.errors import SpecError

#: Flags of `helios render` that take a value, mapped to RenderConfig field names.
RENDER_VALUE_FLAGS: dict[str, str] = {
    "-o": "output",
    "--output": "output",
    "--start-frame": "start_frame",
    "--frame-count": "frame_count",
    "--width": "width",
    "--height": "height",
    "--fps": "fps",
    "--mode": "capture",
    "--capture": "capture",
    "--quality": "crf",
    "--crf": "crf",
    "--audio-codec": "audio_codec",
    "--video-codec": "video_codec",
    "--pixel-format": "pixel_format",
}
#: Flags that take no value and do not change a chunk's pixels.
RENDER_SWITCHES = {"--quiet", "-q", "--no-audio"}
#: Flags that take a value but only change how a render is executed, not its pixels (ours: --parts).
RENDER_EXECUTION_FLAGS = {"--parts"}
_INT_FIELDS = {"start_frame", "frame_count", "width", "height", "crf"}


def is_helios_job(data: dict[str, Any]) -> bool:
    """True for the original Helios CLI's job files (metadata / mergeCommand / string commands)."""
    if "metadata" in data or "mergeCommand" in data:
        return True
    chunks = data.get("chunks", data.get("partitions"))
    return (
        "config" not in data
        and isinstance(chunks, list)
        and any(isinstance(chunk, dict) and isinstance(chunk.get("command"), str) for chunk in chunks)
    )


def _tokens(command: Any, where: str) -> list[str]:
    if isinstance(command, list) and all(isinstance(token, str) for token in command):
        return list(command)
    if not isinstance(command, str):
        raise SpecError(f"{where}: must be a command string, got {type(command).__name__}")
    try:
        return shlex.split(command)
    except ValueError as error:
        raise SpecError(f"{where}: cannot tokenize command ({error})") from None


def _strip_program(tokens: list[str], subcommand: str, where: str) -> list[str]:
    rest = list(tokens)
    if rest[:1] == ["npx"]:
        rest = rest[1:]
    if len(rest) < 2 or PurePosixPath(rest[0]).name not in ("helios", "helios.js") or rest[1] != subcommand:
        shown = " ".join(tokens[:3]) or "(empty)"
        raise SpecError(f"{where}: expected a 'helios {subcommand}' command, got {shown!r}")
    return rest[2:]


def parse_render_command(command: Any, where: str) -> dict[str, Any]:
    """Read the settings of one `helios render ...` command: the input and the known flags."""
    args = _strip_program(_tokens(command, where), "render", where)
    settings: dict[str, Any] = {}
    index = 0
    while index < len(args):
        token = args[index]
        if token.startswith("-") and token != "-":
            flag, _, inline = token.partition("=")
            if flag in RENDER_SWITCHES:
                index += 1
                continue
            if flag in RENDER_EXECUTION_FLAGS:
                index += 1 if inline else 2
                continue
            if flag not in RENDER_VALUE_FLAGS:
                raise SpecError(f"{where}: unknown flag {flag!r} in helios render command")
            if inline:
                value = inline
                index += 1
            else:
                if index + 1 >= len(args):
                    raise SpecError(f"{where}: flag {flag!r} has no value")
                value = args[index + 1]
                index += 2
            field = RENDER_VALUE_FLAGS[flag]
            settings[field] = _convert(field, value, f"{where} {flag}")
        else:
            if "input" in settings:
                raise SpecError(f"{where}: unexpected extra argument {token!r} (input is {settings['input']!r})")
            settings["input"] = token
            index += 1
    if "input" not in settings:
        raise SpecError(f"{where}: helios render command names no input")
    return settings


def _convert(field: str, value: str, where: str) -> Any:
    try:
        if field in _INT_FIELDS:
            return int(value)
        if field == "fps":
            return float(value)
    except ValueError:
        raise SpecError(f"{where}: expected a number, got {value!r}") from None
    return value


def parse_merge_command(command: Any, where: str) -> tuple[str, list[str]]:
    """`helios merge OUT IN...` → (OUT, [IN...]); flags are not part of the Helios merge contract."""
    args = _strip_program(_tokens(command, where), "merge", where)
    positional: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if token in ("--audio-from",):
            index += 2
            continue
        if token.startswith("-"):
            raise SpecError(f"{where}: unknown flag {token!r} in helios merge command")
        positional.append(token)
        index += 1
    if len(positional) < 2:
        raise SpecError(f"{where}: helios merge command needs an output and at least one input")
    return positional[0], positional[1:]


def _job_id_from(data: dict[str, Any], input_ref: str) -> str:
    job_id = data.get("jobId") or data.get("id")
    if isinstance(job_id, str) and job_id:
        return job_id
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", PurePosixPath(input_ref).stem or "job").strip("-.") or "job"
    return f"helios-{stem}"[:128]


def convert_helios_job(data: dict[str, Any]) -> dict[str, Any]:
    """Turn a Helios CLI job file into JobSpec v1 data (validated afterwards by the JobSpec model)."""
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise SpecError("metadata: must be an object")
    raw_chunks = data.get("chunks", data.get("partitions"))
    if not isinstance(raw_chunks, list) or not raw_chunks:
        raise SpecError("chunks: must be a non-empty list")
    chunks: list[dict[str, Any]] = []
    first: dict[str, Any] | None = None
    for index, raw in enumerate(raw_chunks):
        where = f"chunks[{index}].command"
        if not isinstance(raw, dict):
            raise SpecError(f"chunks[{index}]: must be an object")
        if "command" not in raw:
            raise SpecError(f"{where}: required field is missing")
        settings = parse_render_command(raw["command"], where)
        if first is None:
            first = settings
        else:
            for key in ("input", "width", "height", "fps", "capture", "crf", "video_codec", "audio_codec"):
                if settings.get(key) != first.get(key):
                    raise SpecError(f"{where}: {key} {settings.get(key)!r} differs from chunks[0]'s {first.get(key)!r}")
        chunks.append(
            {
                "id": raw.get("id", index),
                "startFrame": raw.get("startFrame", settings.get("start_frame", 0)),
                "frameCount": raw.get("frameCount", settings.get("frame_count")),
                "outputFile": raw.get("outputFile", settings.get("output")),
                "command": raw["command"],
            }
        )
    assert first is not None
    merge_raw = data.get("merge")
    merge_command = data.get("mergeCommand")
    if isinstance(merge_raw, dict):
        merge_command = merge_raw.get("command", merge_command)
    if merge_command is not None:
        output, inputs = parse_merge_command(merge_command, "mergeCommand")
    elif isinstance(merge_raw, dict) and "outputFile" in merge_raw:
        output, inputs = merge_raw["outputFile"], merge_raw.get("inputs", [])
    else:
        raise SpecError("mergeCommand: required field is missing")

    start = chunks[0]["startFrame"]
    total = metadata.get("totalFrames")
    if total is None:
        total = sum(int(chunk["frameCount"] or 0) for chunk in chunks)
    config = {
        "input": first["input"],
        "width": metadata.get("width", first.get("width", 1280)),
        "height": metadata.get("height", first.get("height", 720)),
        "fps": metadata.get("fps", first.get("fps", 30)),
        "startFrame": start,
        "frameCount": total,
        "capture": first.get("capture", "auto"),
        "output": output,
    }
    for field, key in (
        ("crf", "crf"),
        ("video_codec", "videoCodec"),
        ("audio_codec", "audioCodec"),
        ("pixel_format", "pixelFormat"),
    ):
        if field in first:
            config[key] = first[field]
    return {
        "version": 1,
        "jobId": _job_id_from(data, first["input"]),
        "config": config,
        "chunks": chunks,
        "merge": {"outputFile": output, "inputs": inputs, "command": merge_command},
    }
