"""EntityBoundedStream on its own: bytes pass through unchanged and the count does not
depend on how the input is cut into reads."""

from __future__ import annotations

import io

import pytest

from kgserver.errors import ImportSyntaxError
from kgserver.rdf.xmlentities import EXPANSION_FLOOR, EntityBoundedStream


class Trickle(io.RawIOBase):
    """A stream that hands out three bytes per read: every token is split somewhere."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(3)


def document(value_length: int, references: int) -> bytes:
    value = "v" * value_length
    body = "&e;" * references
    return (
        f'<!DOCTYPE r [\n<!ENTITY e "{value}">\n<!ENTITY % p "&e;x">\n]>\n'
        f"<r>{body}&amp;&lt;&#38;&e</r>\n"
    ).encode()


def read_all(stream: EntityBoundedStream) -> bytes:
    return io.BufferedReader(stream).read()


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "one-byte-reads"])
def test_bytes_pass_through_unchanged(trickle: bool) -> None:
    data = document(1000, 300)
    source = Trickle(data) if trickle else io.BytesIO(data)
    # A raw stream is what the class reads too; typeshed's BinaryIO wants more methods.
    assert read_all(EntityBoundedStream(source, "doc.rdf")) == data  # type: ignore[arg-type]


@pytest.mark.parametrize("trickle", [False, True], ids=["whole", "one-byte-reads"])
def test_the_budget_is_the_same_however_the_input_is_read(trickle: bool) -> None:
    # Two declarations of 5,000 characters each ("e", and "p" that uses it), then
    # references to "e": 200 fit in the budget (1 MiB + 10 per byte read), 230 do not.
    value = 5_000
    assert (200 + 2) * value + 1 < EXPANSION_FLOOR
    assert (230 + 2) * value > EXPANSION_FLOOR + 10 * len(document(value, 230))

    def run(references: int) -> None:
        data = document(value, references)
        source = Trickle(data) if trickle else io.BytesIO(data)
        read_all(EntityBoundedStream(source, "doc.rdf"))  # type: ignore[arg-type]  # as above

    run(200)
    with pytest.raises(ImportSyntaxError) as caught:
        run(230)
    assert (caught.value.file, caught.value.line) == ("doc.rdf", 5)


def test_an_unfinished_declaration_is_held_back_only_up_to_the_floor() -> None:
    """Text after "<!ENTITY" that never becomes a declaration is not buffered to the end."""
    data = b"<r><!-- <!ENTITY never closed -->" + b"<a/>\n" * EXPANSION_FLOOR + b"</r>\n"
    stream = EntityBoundedStream(io.BytesIO(data), "doc.rdf")
    with pytest.raises(ImportSyntaxError, match="an entity declaration other than") as caught:
        read_all(stream)
    assert caught.value.line == 1
