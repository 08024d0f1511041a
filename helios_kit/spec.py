"""JobSpec v1: the pydantic models of a render job, their invariants and stable JSON (no files, no networks).

The JSON contract is DESIGN §3: camelCase keys, unknown keys rejected, chunks that cover the frame range
exactly once and in order, output paths that stay inside the job's output root. Job files written by the
original Helios CLI are converted on load by :mod:`helios_kit.helios_format`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable
from enum import StrEnum
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from helios_kit.errors import SpecError
from helios_kit.frames import MAX_FPS, MAX_FRAMES, MAX_HOURS

SPEC_VERSION = 1
#: A done-manifest sits beside each output as `<output>.done.json` (see helios_kit.store).
MANIFEST_SUFFIX = ".done.json"
JOB_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _relative_confined_path(value: str) -> str:
    """Accept a relative POSIX path that cannot leave the job's output root; return it normalised."""
    if not value or not value.strip():
        raise ValueError("must not be empty")
    if "\\" in value or PureWindowsPath(value).drive:
        raise ValueError(f"must be a relative POSIX path, got {value!r}")
    path = PurePosixPath(value)
    if path.is_absolute():
        raise ValueError(f"must be relative to the job's directory, got absolute path {value!r}")
    if any(part == ".." for part in path.parts):
        raise ValueError(f"must stay inside the job's directory (no '..'), got {value!r}")
    normalised = str(path)
    if normalised in (".", ""):
        raise ValueError(f"must name a file, got {value!r}")
    return normalised


RelativePath = Annotated[str, AfterValidator(_relative_confined_path)]

#: A codec or pixel-format name as ffmpeg spells them (`libx264`, `prores_ks`, `yuv420p10le`): never an
#: option (`-vf`), never several words. Values reach ffmpeg's argv, so nothing else gets through.
CODEC_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CODEC_NAME_MAX_LENGTH = 64


def check_codec_name(value: str) -> str:
    """Accept a codec or pixel-format name (`libx264`, `yuv420p`, `prores_ks`); ValueError for anything else."""
    if not isinstance(value, str) or not CODEC_NAME_PATTERN.fullmatch(value) or len(value) > CODEC_NAME_MAX_LENGTH:
        raise ValueError(
            f"must be a name like libx264, yuv420p or prores_ks (letters, digits, '_', '.', '-'; "
            f"at most {CODEC_NAME_MAX_LENGTH} characters), got {value!r}"
        )
    return value


def _frame_bound(value: int) -> int:
    if value > MAX_FRAMES:
        raise ValueError(f"must be <= {MAX_FRAMES} ({MAX_HOURS} h at {MAX_FPS} fps), got {value}")
    return value


CodecName = Annotated[str, AfterValidator(check_codec_name)]
#: A frame index or count: at most MAX_FRAMES (24 h at the highest frame rate).
FrameNumber = Annotated[int, AfterValidator(_frame_bound)]
Command = list[str] | str | None


class SpecModel(BaseModel):
    """Base for every JobSpec model: camelCase JSON, snake_case Python, unknown keys rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_assignment=True,
    )


class CaptureMode(StrEnum):
    """How frames are read from the page: `auto` picks `canvas` for a single full-frame canvas."""

    AUTO = "auto"
    DOM = "dom"
    CANVAS = "canvas"


#: Pixel formats whose chroma is subsampled horizontally (and, for 4:2:0, vertically): sizes must be even.
_SUBSAMPLED_PIXEL_FORMATS = re.compile(r"^(yuvj?4(20|22|11)|nv12|nv21)")


class RenderConfig(SpecModel):
    """Everything that decides the pixels and the encoding of a render, shared by all chunks of a job."""

    input: str = Field(min_length=1, description="Composition: path relative to the job dir, or URL.")
    width: int = Field(1280, gt=0, le=16384)
    height: int = Field(720, gt=0, le=16384)
    fps: float = Field(30, gt=0, le=MAX_FPS)
    start_frame: FrameNumber = Field(0, ge=0)
    frame_count: FrameNumber = Field(gt=0)
    capture: CaptureMode = CaptureMode.AUTO
    video_codec: CodecName = "libx264"
    audio_codec: CodecName = "aac"
    pixel_format: CodecName = "yuv420p"
    crf: int = Field(18, ge=0, le=63)
    seed: int = Field(
        0, ge=0, le=2**32 - 1, description="Seeds Math.random and crypto in the page; part of each chunk's identity."
    )
    props: dict[str, JsonValue] = Field(
        default_factory=dict,
        description="A JSON object for the composition (window.__HELIOS_PROPS__); part of each chunk's identity.",
    )
    output: RelativePath = "out.mp4"

    @field_validator("props")
    @classmethod
    def _props_are_portable_json(cls, props: dict[str, Any]) -> dict[str, Any]:
        return normalise_json_object(props, "config.props")

    @model_validator(mode="after")
    def _even_size_for_subsampled_chroma(self) -> RenderConfig:
        if _SUBSAMPLED_PIXEL_FORMATS.match(self.pixel_format):
            for name, value in (("width", self.width), ("height", self.height)):
                if value % 2:
                    raise ValueError(f"config.{name}: must be even for pixel format {self.pixel_format}, got {value}")
        return self

    @property
    def end_frame(self) -> int:
        """One past the last frame of the job."""
        return self.start_frame + self.frame_count

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps


class Chunk(SpecModel):
    """A contiguous frame range rendered into its own file."""

    id: int = Field(ge=0, le=MAX_FRAMES)
    start_frame: FrameNumber = Field(ge=0)
    frame_count: FrameNumber = Field(gt=0)
    output_file: RelativePath
    command: Command = None

    @property
    def end_frame(self) -> int:
        return self.start_frame + self.frame_count


class Merge(SpecModel):
    """The last step: join the chunk files, in order, into the job's output."""

    output_file: RelativePath
    inputs: list[RelativePath] = Field(min_length=1)
    command: Command = None


class Verify(SpecModel):
    """Checks a run makes besides rendering (`verify` in the JobSpec; not part of any chunk's identity)."""

    seams: bool = Field(
        False, description="Render one extra frame per chunk boundary and compare it with the next chunk's first."
    )
    min_psnr: float = Field(
        50.0, gt=0, le=100, description="A seam whose two frames are further apart than this (dB) fails the run."
    )


class JobSpec(SpecModel):
    """A planned render: config, the chunks that split it, and the merge that joins them."""

    version: Literal[1] = SPEC_VERSION
    job_id: str = Field(pattern=JOB_ID_PATTERN)
    config: RenderConfig
    chunks: list[Chunk] = Field(
        min_length=1,
        validation_alias=AliasChoices("chunks", "partitions"),
        serialization_alias="chunks",
    )
    merge: Merge
    verify: Verify = Field(default_factory=Verify)

    @field_validator("chunks")
    @classmethod
    def _unique_ids(cls, chunks: list[Chunk]) -> list[Chunk]:
        seen: dict[int, int] = {}
        for index, chunk in enumerate(chunks):
            if chunk.id in seen:
                raise ValueError(f"chunks[{index}].id: duplicate id {chunk.id} (also chunks[{seen[chunk.id]}])")
            seen[chunk.id] = index
        outputs: dict[str, int] = {}
        for index, chunk in enumerate(chunks):
            if chunk.output_file in outputs:
                raise ValueError(
                    f"chunks[{index}].outputFile: {chunk.output_file!r} is also chunks[{outputs[chunk.output_file]}]'s"
                )
            outputs[chunk.output_file] = index
        return chunks

    @model_validator(mode="after")
    def _coverage_and_merge(self) -> JobSpec:
        expected = self.config.start_frame
        for index, chunk in enumerate(self.chunks):
            if chunk.start_frame != expected:
                raise ValueError(
                    f"chunks[{index}].startFrame: expected {expected} so chunks cover "
                    f"[{self.config.start_frame}, {self.config.end_frame}) exactly once in order, "
                    f"got {chunk.start_frame}"
                )
            expected = chunk.end_frame
        if expected != self.config.end_frame:
            raise ValueError(
                f"chunks[{len(self.chunks) - 1}].frameCount: chunks end at frame {expected}, "
                f"but config covers [{self.config.start_frame}, {self.config.end_frame})"
            )
        chunk_outputs = [chunk.output_file for chunk in self.chunks]
        if self.merge.inputs != chunk_outputs:
            raise ValueError(
                f"merge.inputs: must be the chunk outputs in order {chunk_outputs}, got {self.merge.inputs}"
            )
        if self.merge.output_file in chunk_outputs:
            raise ValueError(f"merge.outputFile: {self.merge.output_file!r} is also a chunk's output")
        return self

    def chunk(self, chunk_id: int) -> Chunk:
        """The chunk with this id, or a SpecError listing the ids that exist."""
        for chunk in self.chunks:
            if chunk.id == chunk_id:
                return chunk
        raise SpecError(
            f"unknown chunk id {chunk_id}: job {self.job_id} has ids {id_ranges(chunk.id for chunk in self.chunks)}"
        )


def id_ranges(ids: Iterable[int]) -> str:
    """Chunk ids as ranges, the way `--chunks` takes them: [0, 1, 2, 5, 7, 8] → `0-2,5,7-8`."""
    ranges: list[str] = []
    ordered = sorted(set(ids))
    for index, value in enumerate(ordered):
        if index == 0 or value != ordered[index - 1] + 1:
            start = value
        if index + 1 == len(ordered) or ordered[index + 1] != value + 1:
            ranges.append(str(start) if start == value else f"{start}-{value}")
    return ",".join(ranges)


# ---------------------------------------------------------------------------------------------------
# Errors: one line naming the field path, e.g. "chunks[3].frameCount: must be > 0"

_MESSAGES = {
    "greater_than": "must be > {gt}",
    "greater_than_equal": "must be >= {ge}",
    "less_than": "must be < {lt}",
    "less_than_equal": "must be <= {le}",
    "missing": "required field is missing",
    "extra_forbidden": "unknown key",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "model_type": "must be an object",
    "too_short": "must not be empty",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must match {pattern}",
    "literal_error": "must be {expected}",
    "enum": "must be one of {expected}",
}


def _format_loc(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("list[str]", "str", "none", "function-after[_relative_confined_path(), str]"):
            continue  # union / validator branches pydantic adds to the location
        else:
            text += ("." if text else "") + str(part)
    return text


def format_validation_error(error: ValidationError) -> str:
    """The first error of a pydantic ValidationError as one line: `field.path: problem`."""
    errors = error.errors(include_url=False)
    first = errors[0]
    kind = first["type"]
    ctx = first.get("ctx") or {}
    if kind == "value_error":
        message = str(ctx.get("error", first["msg"]))
    elif kind in _MESSAGES:
        try:
            message = _MESSAGES[kind].format(**ctx)
        except (KeyError, IndexError):
            message = first["msg"]
    else:
        message = first["msg"][0].lower() + first["msg"][1:]
    loc = _format_loc(tuple(first["loc"]))
    if re.match(r"^[A-Za-z_][\w.\[\]]*: ", message):
        line = message  # our validators already name their (absolute) field path
    elif loc:
        line = f"{loc}: {message}"
    else:
        line = message
    if kind in ("int_parsing", "float_parsing", "string_type", "int_type", "float_type", "literal_error"):
        line += f" (got {first.get('input')!r})"
    more = len(errors) - 1
    if more:
        line += f" (and {more} more problem{'s' if more > 1 else ''})"
    return line


# ---------------------------------------------------------------------------------------------------
# JSON from users: parsed in one guarded place (job files, request bodies, Lambda events)

#: Deepest nesting of arrays and objects accepted in JSON from a user. A job file needs 4 levels; the rest
#: is room for `config.props`. Deeper input is refused with one line instead of a RecursionError.
MAX_JSON_DEPTH = 64


def parse_json(text: str | bytes, source: str) -> Any:
    """Parse JSON that a user controls; SpecError naming `source` for invalid JSON (with line and column),
    text that is not UTF-8, or nesting deeper than MAX_JSON_DEPTH. Never a RecursionError or a traceback."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SpecError(f"{source}: invalid JSON at line {error.lineno}, column {error.colno}: {error.msg}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{source}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except RecursionError:
        raise SpecError(_too_deep(source)) from None
    except (TypeError, ValueError) as error:  # bytes in another encoding json cannot detect, a wrong type
        raise SpecError(f"{source}: not JSON text ({error})") from None
    if json_depth_exceeds(data, MAX_JSON_DEPTH):
        raise SpecError(_too_deep(source))
    return data


def parse_json_object(text: str | bytes, source: str) -> dict[str, Any]:
    """:func:`parse_json` for a request body or an event: the document must be a JSON object."""
    data = parse_json(text, source)
    if not isinstance(data, dict):
        raise SpecError(f"{source}: must be a JSON object, got {_json_type(data)}")
    return data


def _too_deep(source: str) -> str:
    return f"{source}: JSON nested more than {MAX_JSON_DEPTH} levels deep"


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when `value` nests lists and dicts more than `limit` levels deep (`{}` is 1). Iterative, so it
    never recurses itself."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def normalise_json_object(value: dict[str, Any], where: str) -> dict[str, Any]:
    """A JSON object with its keys sorted at every level (stable JSON, stable digests); ValueError naming
    `where` for nesting beyond MAX_JSON_DEPTH or a number JSON cannot carry (NaN, Infinity)."""
    if json_depth_exceeds(value, MAX_JSON_DEPTH - 2):  # the job file's own levels: root, config
        raise ValueError(f"{where}: nested more than {MAX_JSON_DEPTH - 2} levels deep")
    return _sorted_json(value, where)


def _sorted_json(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        return {key: _sorted_json(value[key], f"{where}.{key}") for key in sorted(value)}
    if isinstance(value, list):
        return [_sorted_json(item, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where}: {value} is not a JSON number")
    return value


# ---------------------------------------------------------------------------------------------------
# Load / dump


def spec_from_data(data: Any) -> JobSpec:
    """Validate parsed JSON (ours or the original Helios CLI's) into a JobSpec, or raise SpecError."""
    if not isinstance(data, dict):
        raise SpecError(f"job spec must be a JSON object, got {type(data).__name__}")
    from helios_kit.helios_format import convert_helios_job, is_helios_job

    if is_helios_job(data):
        data = convert_helios_job(data)
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def loads(text: str | bytes, source: str = "<spec>") -> JobSpec:
    """Parse JSON text into a JobSpec; invalid JSON names its line and column, deep nesting its source."""
    data = parse_json(text, source)
    try:
        return spec_from_data(data)
    except SpecError as error:
        raise SpecError(f"{source}: {error}") from None


def load(path: str | os.PathLike[str]) -> JobSpec:
    """Read a JobSpec from a local file."""
    try:
        text = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError(f"job file not found: {path}") from None
    except IsADirectoryError:
        raise SpecError(f"job file is a directory: {path}") from None
    return loads(text, source=str(path))


def dumps(spec: JobSpec) -> str:
    """Stable, pretty JSON (camelCase keys, in model order, trailing newline); `verify` only when set."""
    data = spec.model_dump(mode="json", by_alias=True, exclude={"verify"} if spec.verify == Verify() else None)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def dump(spec: JobSpec, path: str | os.PathLike[str]) -> None:
    """Write a JobSpec atomically (temporary name, then rename)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.write_text(dumps(spec), encoding="utf-8")
    os.replace(tmp, target)
