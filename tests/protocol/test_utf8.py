"""Tests of wsharbor.protocol.utf8: streaming UTF-8 validation.

The C validator and the pure-Python one are checked against ``bytes.decode`` (the
verdict on the whole text) and against the standard library's incremental decoder
(where the text becomes invalid: the piece that raises), fed whole, one byte at a
time and cut anywhere. The C validator may fail earlier than the decoder, never
later: it refuses a byte as soon as no valid text can start with what it has
seen (``ED A0`` is refused at ``A0``; the decoder waits for the third byte).
"""

from __future__ import annotations

import codecs
import itertools
import os
import subprocess
import sys
import textwrap

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsharbor.protocol import utf8
from wsharbor.protocol.frames import SPEEDUPS
from wsharbor.protocol.utf8 import Utf8Validator, Utf8ValidatorPython

VALIDATORS = [pytest.param(Utf8ValidatorPython, id="python")]
if SPEEDUPS:
    from wsharbor.protocol._speedups import Utf8Validator as Utf8ValidatorC

    VALIDATORS.append(pytest.param(Utf8ValidatorC, id="c"))

VALID = [
    b"",
    b"ascii only, and long enough for the 8-byte fast path",
    "κόσμε".encode(),
    "Hello-µ@ßöäüàá-UTF-8!! 𝄞 ✓ 中文".encode(),
    b"\x7f\xc2\x80\xdf\xbf\xe0\xa0\x80\xed\x9f\xbf\xee\x80\x80\xef\xbf\xbf",
    b"\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\xf1\x80\x80\x80",
    b"\xef\xbb\xbfBOM",
    b"x" * 7 + "é".encode() + b"y" * 9,  # a sequence across the 8-byte boundary
]

INVALID = [
    b"\x80",
    b"\xbf",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xe0\x9f\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\xaf",
    b"\xf0\x8f\xbf\xbf",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xc2",
    b"\xe0\xa0",
    b"\xf0\x90\x80",
    b"\xc2 ",
    b"\xe2\x82",
    "κόσμε".encode() + b"\xed\xa0\x80edited",
    b"abcdefghijklmnop\x80",
]


def verdict(validator_type: type, pieces: list[bytes]) -> int | None:
    """Index of the piece at which the validator raises (len(pieces) for the
    final check), or None if the text is valid."""
    validator = validator_type()
    for index, piece in enumerate(pieces):
        try:
            validator.feed(piece)
        except UnicodeDecodeError:
            return index
    try:
        validator.feed(b"", True)
    except UnicodeDecodeError:
        return len(pieces)
    return None


def reference_verdict(pieces: list[bytes]) -> int | None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    for index, piece in enumerate(pieces):
        try:
            decoder.decode(piece)
        except UnicodeDecodeError:
            return index
    try:
        decoder.decode(b"", True)
    except UnicodeDecodeError:
        return len(pieces)
    return None


def test_the_validator_is_the_c_one_when_built() -> None:
    assert (Utf8Validator is Utf8ValidatorPython) is not SPEEDUPS


@pytest.mark.parametrize("validator_type", VALIDATORS)
@pytest.mark.parametrize("text", VALID)
def test_valid(validator_type: type, text: bytes) -> None:
    validator = validator_type()
    validator.feed(text)
    validator.feed(b"", final=True)
    bytewise = validator_type()
    for i in range(len(text)):
        bytewise.feed(memoryview(text)[i : i + 1])
    bytewise.feed(b"", True)


@pytest.mark.parametrize("validator_type", VALIDATORS)
@pytest.mark.parametrize("text", INVALID)
def test_invalid_fails_no_later_than_the_decoder(validator_type: type, text: bytes) -> None:
    whole = [text]
    bytewise = [text[i : i + 1] for i in range(len(text))]
    assert verdict(validator_type, whole) == reference_verdict(whole) is not None
    failed_at = verdict(validator_type, bytewise)
    expected = reference_verdict(bytewise)
    assert failed_at is not None
    assert expected is not None
    assert failed_at <= expected
    if validator_type is not Utf8ValidatorPython:
        # Fail fast: at the first byte that no valid text can start with (or at
        # the end, for a sequence cut short).
        first_bad = next(
            (i for i in range(len(text)) if not could_start_valid(text[: i + 1])), len(text)
        )
        assert failed_at == first_bad


def could_start_valid(prefix: bytes) -> bool:
    """Whether some valid UTF-8 text starts with ``prefix``."""
    for count in range(4):
        for tail in itertools.product((0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF), repeat=count):
            try:
                (prefix + bytes(tail)).decode()
            except UnicodeDecodeError:
                continue
            return True
    return False


@pytest.mark.parametrize("validator_type", VALIDATORS)
@pytest.mark.parametrize("text", INVALID)
def test_reason_and_position_as_bytes_decode(validator_type: type, text: bytes) -> None:
    prefix = b"0123456789"
    with pytest.raises(UnicodeDecodeError) as expected:
        (prefix + text).decode()
    with pytest.raises(UnicodeDecodeError) as raised:
        validator = validator_type()
        validator.feed(prefix + text)
        validator.feed(b"", True)
    assert raised.value.reason == expected.value.reason
    if expected.value.reason != "unexpected end of data":  # at final: in the last piece
        assert raised.value.start == expected.value.start


@pytest.mark.parametrize("validator_type", VALIDATORS)
def test_state_is_kept_across_calls_and_bytes_like_inputs(validator_type: type) -> None:
    validator = validator_type()
    snowman = "☃".encode()
    validator.feed(b"a" + snowman[:1])
    validator.feed(bytearray(snowman[1:2]))
    validator.feed(memoryview(snowman[2:] + b"z"), final=True)
    with pytest.raises(UnicodeDecodeError, match="unexpected end of data"):
        cut = validator_type()
        cut.feed(snowman[:2])
        cut.feed(b"", final=True)


def test_c_validator_takes_no_arguments() -> None:
    speedups = pytest.importorskip("wsharbor.protocol._speedups")
    with pytest.raises(TypeError):
        speedups.Utf8Validator(1)
    with pytest.raises(TypeError):
        speedups.Utf8Validator().feed("text")


@settings(max_examples=400, deadline=None)
@given(
    text=st.one_of(
        st.binary(max_size=64),
        st.text(max_size=32).map(str.encode),
        st.lists(st.sampled_from(VALID + INVALID), max_size=6).map(b"".join),
    ),
    cuts=st.lists(st.integers(0, 64), max_size=6),
)
def test_property_same_verdict_as_the_incremental_decoder(text: bytes, cuts: list[int]) -> None:
    bounds = sorted({min(cut, len(text)) for cut in cuts})
    pieces = [text[a:b] for a, b in zip([0, *bounds], [*bounds, len(text)], strict=True)]
    expected = reference_verdict(pieces)
    assert verdict(Utf8ValidatorPython, pieces) == expected
    for param in VALIDATORS:
        got = verdict(param.values[0], pieces)
        assert (got is None) == (expected is None), param.id
        if got is not None:
            assert expected is not None
            assert got <= expected, param.id  # never later than the decoder
    try:
        text.decode()
    except UnicodeDecodeError:
        assert expected is not None
    else:
        assert expected is None


def test_no_speedups_env_loads_the_python_validator() -> None:
    code = textwrap.dedent(
        """
        from wsharbor.protocol import utf8
        assert utf8.Utf8Validator is utf8.Utf8ValidatorPython
        print("ok")
        """
    )
    env = {**os.environ, "WSHARBOR_NO_SPEEDUPS": "1"}
    env.pop("WSHARBOR_REQUIRE_SPEEDUPS", None)
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert utf8.__all__ == ["Utf8Validator", "Utf8ValidatorLike", "Utf8ValidatorPython"]
