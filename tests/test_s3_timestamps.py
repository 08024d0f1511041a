"""The S3 session's timestamp parser (composition.locations.parse_s3_timestamp) gives what botocore's own
parser gives, for every timestamp shape S3 sends, and our S3 filesystems use it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.utils import parse_timestamp
from hypothesis import given
from hypothesis import strategies as st

from helios_kit.composition.locations import _s3_session, parse_s3_timestamp

instants = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@given(instants, st.booleans())
def test_iso_utc_timestamps_parse_as_botocore_parses_them(instant: datetime, millis: bool) -> None:
    text = instant.strftime("%Y-%m-%dT%H:%M:%S") + (f".{instant.microsecond // 1000:03d}" if millis else "") + "Z"
    ours, theirs = parse_s3_timestamp(text), parse_timestamp(text)
    assert ours == theirs and ours.utcoffset() == timedelta(0)
    assert str(ours) == str(theirs)  # signatures and cache keys built from str() stay the same


@pytest.mark.parametrize(
    "value",
    ["Thu, 03 Dec 2026 07:27:30 GMT", "2026-12-03T07:27:30+02:00", "2026-12-03T07:27:30.5Z", 1764746850, "1764746850"],
)
def test_other_shapes_go_to_botocore(value: object) -> None:
    assert parse_s3_timestamp(value) == parse_timestamp(value)


def test_the_shared_session_parses_with_it() -> None:
    parsers = _s3_session().get_component("response_parser_factory")
    assert parsers.create_parser("rest-xml")._timestamp_parser is parse_s3_timestamp
