"""Conversion of job files written by the original Helios CLI into JobSpec v1 data.

Two shapes load (DESIGN §3):

* what `helios render --emit-job` of `@helios-project/cli` writes::

    {"metadata": {"totalFrames", "fps", "width", "height", "duration"},
     "chunks": [{"id", "startFrame", "frameCount", "outputFile": "output_part_0.mov",
                 "command": "helios render comp.html -o output_part_0.mov --start-frame 0 --frame-count 15 ..."}],
     "mergeCommand": "helios merge output.mp4 output_part_0.mov ... [--audio-codec aac] [--quality 23]"}

  (its job runner's specs may add `id` and `assetsUrl`);
* `config` holding the CLI's options plus `input` (extra CLI keys such as `concurrency`, `emitJob`, `mode`,
  `quality`, `headless` tolerated, numbers possibly as strings), `partitions` (or `chunks`) with string
  `command`s, and `merge` with a `command`.

Settings live in the command strings, so they are tokenized with :func:`shlex.split` — never run through a
shell — and the known flags read; an unknown flag, or a command that is not `helios render`, is an error
naming the chunk and the token. Chunk files such as `.mov` are joined by stream copy into the job's output.
The chunks' `--audio-codec` (the original forces `pcm_s16le` for its intermediate files) is not the job's:
audio is mixed once at the merge, with the merge's `--audio-codec` (default aac).
"""

from __future__ import annotations

import re
import shlex
from pathlib import PurePosixPath
from typing import Any

from helios_kit.errors import SpecError
from helios_kit.frames import frames_for_duration

#: Flags of `helios render` that take a value, mapped to RenderConfig field names (and `duration`).
RENDER_VALUE_FLAGS: dict[str, str] = {
    "-o": "output",
    "--output": "output",
    "--start-frame": "start_frame",
    "--frame-count": "frame_count",
    "--duration": "duration",
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
RENDER_SWITCHES = {"--quiet", "-q", "--no-audio", "--no-headless", "--headless"}
#: Flags that take a value but only change how a render is executed, not its pixels.
RENDER_EXECUTION_FLAGS = {"--parts", "--concurrency", "--base-url", "--job-base-url"}
#: Flags of `helios merge` that take a value: the original's output settings, and ours.
MERGE_VALUE_FLAGS: dict[str, str] = {
    "--video-codec": "video_codec",
    "--audio-codec": "audio_codec",
    "--quality": "crf",
    "--crf": "crf",
    "--audio-from": "audio_from",
    "--audio-offset": "audio_offset",
    "--expected-frames": "expected_frames",
}
#: The original CLI's defaults for what a command leaves out.
ORIGINAL_DEFAULTS = {"width": 1920, "height": 1080, "fps": 30}
#: Settings every chunk of one job must share.
SHARED_SETTINGS = ("input", "width", "height", "fps", "capture", "crf", "video_codec", "pixel_format")
#: Keys of the `config` shape, with the RenderConfig field each stands for (the CLI's and ours).
CONFIG_KEYS: dict[str, str] = {
    "input": "input",
    "width": "width",
    "height": "height",
    "fps": "fps",
    "startFrame": "start_frame",
    "frameCount": "frame_count",
    "duration": "duration",
    "mode": "capture",
    "capture": "capture",
    "quality": "crf",
    "crf": "crf",
    "videoCodec": "video_codec",
    "audioCodec": "audio_codec",
    "pixelFormat": "pixel_format",
}
_INT_FIELDS = {"start_frame", "frame_count", "width", "height", "crf", "expected_frames"}
_FLOAT_FIELDS = {"fps", "duration", "audio_offset"}
#: Options of the original CLI's `helios render` that our RenderConfig does not have: a `config` holding one
#: of them comes from the original CLI. (An unknown key in a config of ours stays an error naming it.)
ORIGINAL_ONLY_KEYS = {"duration", "quality", "mode", "concurrency", "headless", "emitJob", "baseUrl", "jobBaseUrl"}


def is_helios_job(data: dict[str, Any]) -> bool:
    """True for the original Helios CLI's job files; False for ours (which always carry `version`)."""
    if "version" in data:
        return False
    if {"metadata", "mergeCommand", "partitions"} & data.keys():
        return True
    chunks = data.get("chunks")
    string_commands = isinstance(chunks, list) and any(
        isinstance(chunk, dict) and isinstance(chunk.get("command"), str) for chunk in chunks
    )
    config, merge = data.get("config"), data.get("merge")
    if not isinstance(config, dict):
        return string_commands
    cli_keys = bool(ORIGINAL_ONLY_KEYS & config.keys())
    merge_by_command = isinstance(merge, dict) and "command" in merge and "inputs" not in merge
    return string_commands or cli_keys or merge_by_command


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


def _read_flags(
    args: list[str],
    value_flags: dict[str, str],
    where: str,
    *,
    switches: set[str],
    ignored: set[str],
    command: str,
    single_positional: bool = False,
) -> tuple[dict[str, Any], list[str]]:
    """Walk argv: (settings from the known flags, positional arguments in order). Tokens are read in order,
    so the first problem is the one reported."""
    settings: dict[str, Any] = {}
    positional: list[str] = []
    index = 0
    while index < len(args):
        token = args[index]
        if not token.startswith("-") or token == "-":
            if single_positional and positional:
                raise SpecError(f"{where}: unexpected extra argument {token!r} (input is {positional[0]!r})")
            positional.append(token)
            index += 1
            continue
        flag, has_inline, inline = token.partition("=")
        if flag in switches:
            index += 1
            continue
        if flag not in value_flags and flag not in ignored:
            raise SpecError(f"{where}: unknown flag {flag!r} in {command} command")
        if has_inline:
            value, index = inline, index + 1
        elif index + 1 < len(args):
            value, index = args[index + 1], index + 2
        else:
            raise SpecError(f"{where}: flag {flag!r} has no value")
        if flag in value_flags:
            field = value_flags[flag]
            settings[field] = _convert(field, value, f"{where} {flag}")
    return settings, positional


def parse_render_command(command: Any, where: str) -> dict[str, Any]:
    """Read the settings of one `helios render ...` command: the input and the known flags.

    A command with `--duration` but no `--frame-count` renders `ceil(duration x fps)` frames.
    """
    args = _strip_program(_tokens(command, where), "render", where)
    settings, positional = _read_flags(
        args,
        RENDER_VALUE_FLAGS,
        where,
        switches=RENDER_SWITCHES,
        ignored=RENDER_EXECUTION_FLAGS,
        command="helios render",
        single_positional=True,
    )
    if not positional:
        raise SpecError(f"{where}: helios render command names no input")
    settings["input"] = positional[0]
    duration = settings.pop("duration", None)
    if "frame_count" not in settings and duration is not None:
        settings["frame_count"] = _frames(
            duration, settings.get("fps", ORIGINAL_DEFAULTS["fps"]), f"{where} --duration"
        )
    return settings


def parse_merge_command(command: Any, where: str) -> tuple[str, list[str]]:
    """`helios merge OUT IN... [flags]` → (OUT, [IN...])."""
    output, inputs, _ = read_merge_command(command, where)
    return output, inputs


def read_merge_command(command: Any, where: str) -> tuple[str, list[str], dict[str, Any]]:
    """`helios merge OUT IN... [--video-codec V] [--audio-codec A] [--quality Q] ...` → (OUT, [IN...], settings)."""
    args = _strip_program(_tokens(command, where), "merge", where)
    settings, positional = _read_flags(
        args, MERGE_VALUE_FLAGS, where, switches={"--quiet", "-q"}, ignored=set(), command="helios merge"
    )
    if len(positional) < 2:
        raise SpecError(f"{where}: helios merge command needs an output and at least one input")
    return positional[0], positional[1:], settings


def _convert(field: str, value: Any, where: str) -> Any:
    """A setting as its RenderConfig type; numbers may arrive as strings (the original CLI's options do)."""
    if field not in _INT_FIELDS and field not in _FLOAT_FIELDS:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise SpecError(f"{where}: expected a number, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise SpecError(f"{where}: expected a number, got {value!r}") from None
    if field in _FLOAT_FIELDS:
        return number
    if not number.is_integer():
        raise SpecError(f"{where}: expected a whole number, got {value!r}")
    return int(number)


def _frames(duration: float, fps: Any, where: str) -> int:
    try:
        return frames_for_duration(duration, float(fps))
    except (TypeError, ValueError) as error:
        raise SpecError(f"{where}: {error}") from None


def _object(data: dict[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{key}: must be an object")
    return value


def _config_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The render settings of a `config` object (the CLI's options plus `input`); other keys are ignored."""
    settings: dict[str, Any] = {}
    for key, field in CONFIG_KEYS.items():
        if config.get(key) is not None:
            settings[field] = _convert(field, config[key], f"config.{key}")
    return settings


def _convert_chunks(data: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chunks (or partitions) as JobSpec chunk data, and the settings read from the first command."""
    key = "partitions" if "partitions" in data and "chunks" not in data else "chunks"
    raw_chunks = data.get(key)
    if not isinstance(raw_chunks, list) or not raw_chunks:
        raise SpecError(f"{key}: must be a non-empty list")
    chunks: list[dict[str, Any]] = []
    first: dict[str, Any] = {}
    for index, raw in enumerate(raw_chunks):
        where = f"{key}[{index}].command"
        if not isinstance(raw, dict):
            raise SpecError(f"{key}[{index}]: must be an object")
        if "command" not in raw:
            raise SpecError(f"{where}: required field is missing")
        settings = parse_render_command(raw["command"], where)
        if index == 0:
            first = settings
        else:
            for name in SHARED_SETTINGS:
                if settings.get(name) != first.get(name):
                    raise SpecError(
                        f"{where}: {name} {settings.get(name)!r} differs from {key}[0]'s {first.get(name)!r}"
                    )
        chunks.append(
            {
                "id": raw.get("id", index),
                "startFrame": raw.get("startFrame", settings.get("start_frame", 0)),
                "frameCount": raw.get("frameCount", settings.get("frame_count")),
                "outputFile": raw.get("outputFile", settings.get("output")),
                "command": raw["command"],
            }
        )
    return chunks, first


def _convert_merge(data: dict[str, Any]) -> tuple[str, list[str], Any, dict[str, Any]]:
    """(output, inputs, command, settings) from `mergeCommand` or a `merge` object."""
    merge = _object(data, "merge")
    command, where = data.get("mergeCommand"), "mergeCommand"
    if "command" in merge:
        command, where = merge["command"], "merge.command"
    settings: dict[str, Any] = {}
    if command is not None:
        output, inputs, settings = read_merge_command(command, where)
    elif "outputFile" not in merge:
        raise SpecError("mergeCommand: required field is missing")
    else:
        output, inputs = merge["outputFile"], merge.get("inputs", [])
    return merge.get("outputFile", output), merge.get("inputs", inputs), command, settings


def _job_frames(metadata: dict[str, Any], chunks: list[dict[str, Any]], config: dict[str, Any], fps: Any) -> Any:
    """The job's frame count: `metadata.totalFrames` (the original computes its chunks from it), else what
    the chunks cover, else `config.frameCount`, else `ceil(config.duration x fps)`. The JobSpec model then
    checks that the chunks cover exactly that range."""
    if metadata.get("totalFrames") is not None:
        return _convert("frame_count", metadata["totalFrames"], "metadata.totalFrames")
    counts = [chunk["frameCount"] for chunk in chunks]
    if all(isinstance(count, int) and not isinstance(count, bool) for count in counts):
        return sum(counts)
    if config.get("frame_count") is not None:
        return config["frame_count"]
    if config.get("duration") is not None:
        return _frames(config["duration"], fps, "config.duration")
    return None  # the JobSpec model names the chunk whose frameCount is wrong


def _pick(field: str, *sources: dict[str, Any], default: Any = None) -> Any:
    for source in sources:
        if source.get(field) is not None:
            return source[field]
    return default


def _job_id_from(data: dict[str, Any], input_ref: str) -> str:
    job_id = data.get("jobId") or data.get("id")
    if isinstance(job_id, str) and job_id:
        return job_id
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", PurePosixPath(input_ref).stem or "job").strip("-.") or "job"
    return f"helios-{stem}"[:128]


def convert_helios_job(data: dict[str, Any]) -> dict[str, Any]:
    """Turn a Helios CLI job file into JobSpec v1 data (validated afterwards by the JobSpec model)."""
    metadata = _object(data, "metadata")
    config_in = _config_settings(_object(data, "config"))
    chunks, first = _convert_chunks(data)
    output, inputs, merge_command, merged = _convert_merge(data)
    meta = {
        field: _convert(field, metadata[key], f"metadata.{key}")
        for key, field in (("width", "width"), ("height", "height"), ("fps", "fps"))
        if metadata.get(key) is not None
    }
    fps = _pick("fps", first, config_in, meta, default=ORIGINAL_DEFAULTS["fps"])
    video_codec = merged.get("video_codec") if merged.get("video_codec") != "copy" else None
    frame_count = _job_frames(metadata, chunks, config_in, fps)
    config: dict[str, Any] = {
        "input": _pick("input", first, config_in),
        "width": _pick("width", first, config_in, meta, default=ORIGINAL_DEFAULTS["width"]),
        "height": _pick("height", first, config_in, meta, default=ORIGINAL_DEFAULTS["height"]),
        "fps": fps,
        "startFrame": chunks[0]["startFrame"],
        "frameCount": frame_count,
        "capture": _pick("capture", first, config_in, default="auto"),
        "output": output,
    }
    optional = {
        "crf": _pick("crf", first, merged, config_in),
        "videoCodec": _pick("video_codec", first, {"video_codec": video_codec}, config_in),
        "audioCodec": _pick("audio_codec", merged, config_in),
        "pixelFormat": _pick("pixel_format", first, config_in),
        "props": _pick("props", _object(data, "config"), data),
    }
    config.update({key: value for key, value in optional.items() if value is not None})
    return {
        "version": 1,
        "jobId": _job_id_from(data, str(config["input"])),
        "config": config,
        "chunks": chunks,
        "merge": {"outputFile": output, "inputs": inputs, "command": merge_command},
    }
