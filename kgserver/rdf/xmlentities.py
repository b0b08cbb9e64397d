"""A bound on DTD entity expansion in RDF/XML ("billion laughs").

pyoxigraph's RDF/XML parser honours internal entities declared in a DOCTYPE
(``<!ENTITY owl "http://www.w3.org/2002/07/owl#">``, common in OWL files) and
expands them without limit: each declaration is expanded when it is read, so ten
nested declarations of ten references each ask for gigabytes before the first
triple. External entities (``SYSTEM``/``PUBLIC``) it refuses already.

:class:`EntityBoundedStream` sits between the file and the parser. It finds every
``<!ENTITY`` declaration and every ``&name;`` reference in the bytes before the
parser sees them, adds up the replacement text they stand for, and raises
:class:`~kgserver.errors.ImportSyntaxError` (file and line) as soon as the total
exceeds :data:`EXPANSION_FLOOR` plus :data:`EXPANSION_RATIO` times the bytes of
the document up to that point. A declaration is held back until it has been checked, so the parser never
expands one that is over budget. Legitimate use (namespace abbreviations) stays far
below the bound; a document whose replacement text outgrows it is refused whole.

The scan accepts one declaration form, the one the parser reads (``<!ENTITY
[%] name "value">``), and refuses any other text that starts with ``<!ENTITY``
rather than guess how the parser would read it. It counts every reference to a
declared entity after its declaration, wherever it stands (comments and CDATA
included): it can overcount, never undercount.
"""

from __future__ import annotations

import io
import re
from typing import BinaryIO, NoReturn

from kgserver.errors import ImportSyntaxError

EXPANSION_FLOOR = 1 << 20
"""Characters of entity replacement text any RDF/XML document may expand to."""

EXPANSION_RATIO = 10
"""Further replacement characters allowed per byte of the document read so far."""

_CHUNK = 1 << 16
_DECLARATION = b"<!ENTITY"
# Entity names as both this scan and the parser delimit them.
_NAME = rb"[^ \t\r\n\x0b\x0c&;<>\"'%]+"
# The one declaration form accepted: <!ENTITY [%] name "value">, ASCII whitespace between
# the parts. Any other text starting with <!ENTITY is refused rather than guessed at.
_DECLARATION_SYNTAX = re.compile(
    rb'<!ENTITY[ \t\r\n]+(?:%[ \t\r\n]+)?(' + _NAME + rb')[ \t\r\n]+"([^"<]*)"[ \t\r\n]*>'
)
_REFERENCE = re.compile(rb"&(" + _NAME + rb");")


class EntityBoundedStream(io.RawIOBase):
    """A read-only byte stream that refuses entity expansion beyond the budget above.

    ``path`` names the file in errors. Bytes pass through unchanged; only their
    release to the reader is delayed while a declaration or a reference is
    incomplete at the end of what has been read.
    """

    def __init__(self, stream: BinaryIO, path: str) -> None:
        super().__init__()
        self._stream = stream
        self._path = path
        self._pending = b""  # read from the stream, not yet accounted for
        self._ready = b""  # accounted for, not yet handed to the reader
        self._eof = False
        self._line = 1  # line of the first byte of ``_pending``
        self._scanned = 0  # bytes accounted for so far
        self._entities: dict[bytes, int] = {}  # name -> length of its replacement text
        self._expanded = 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        """Bytes handed to the reader so far."""
        return self._scanned - len(self._ready)

    # typeshed declares the parameter as any writable buffer; the readers hand in a
    # bytearray or memoryview, whose slices this assigns to.
    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._ready and not (self._eof and not self._pending):
            self._fill()
        size = min(len(buffer), len(self._ready))
        buffer[:size] = self._ready[:size]
        self._ready = self._ready[size:]
        return size

    def _fill(self) -> None:
        chunk = self._stream.read(_CHUNK)
        self._eof = not chunk
        data = self._pending + chunk
        complete = self._scan(data)
        self._ready += data[:complete]
        self._pending = data[complete:]
        self._line += data.count(b"\n", 0, complete)
        self._scanned += complete

    def _scan(self, data: bytes) -> int:
        """Account for the declarations and references in ``data``; return how many of
        its bytes are accounted for (the rest waits for more input)."""
        position = 0
        while (declaration := data.find(_DECLARATION, position)) >= 0:
            self._count_references(data, position, declaration)
            match = _DECLARATION_SYNTAX.match(data, declaration)
            if match is None:
                if not self._eof and len(data) - declaration <= EXPANSION_FLOOR:
                    return declaration  # perhaps only unfinished: wait for more (bounded)
                self._refuse(
                    data, declaration,
                    'an entity declaration other than <!ENTITY name "value"> (or longer than the limit)',
                )
            self._declare(data, match)
            position = match.end()
        self._count_references(data, position, len(data))
        return len(data) if self._eof else self._unfinished_tail(data, position)

    def _declare(self, data: bytes, match: re.Match[bytes]) -> None:
        """Record an entity and its replacement length (its references already expanded)."""
        name, value = match.group(1), match.group(2)
        length = len(value)
        for reference in _REFERENCE.finditer(value):  # others (&#38;, &lt;) stand for one character
            length += self._entities.get(reference.group(1), 1) - len(reference.group(0))
        self._entities[name] = length
        self._add(length, data, match.start())

    def _count_references(self, data: bytes, start: int, end: int) -> None:
        if not self._entities:
            return
        for reference in _REFERENCE.finditer(data, start, end):
            length = self._entities.get(reference.group(1))
            if length is not None:
                self._add(length, data, reference.start())

    def _unfinished_tail(self, data: bytes, position: int) -> int:
        """Where an unfinished ``<!ENTITY`` or ``&name;`` at the end of ``data`` starts
        (it was not counted above and waits for the next read), else ``len(data)``."""
        longest = max(len(_DECLARATION), max(map(len, self._entities), default=0) + 2)
        tail = max(position, len(data) - longest)
        starts = [len(data)]
        bracket = data.rfind(b"<", tail)
        if bracket >= 0 and _DECLARATION.startswith(data[bracket:]):
            starts.append(bracket)
        ampersand = data.rfind(b"&", tail)
        if ampersand >= 0 and b";" not in data[ampersand:]:
            starts.append(ampersand)
        return min(starts)

    def _budget(self, offset: int) -> int:
        """The budget once the document has been read up to ``offset`` in the data being scanned."""
        return EXPANSION_FLOOR + EXPANSION_RATIO * (self._scanned + offset)

    def _add(self, length: int, data: bytes, offset: int) -> None:
        self._expanded += length
        budget = self._budget(offset)
        if self._expanded > budget:
            self._refuse(
                data, offset,
                f"XML entities expand to more than {budget:,} characters here (allowed: "
                f"{EXPANSION_FLOOR:,} plus {EXPANSION_RATIO} per byte of the document)",
            )

    def _refuse(self, data: bytes, offset: int, problem: str) -> NoReturn:
        line = self._line + data.count(b"\n", 0, offset)
        raise ImportSyntaxError(self._path, line, f"{problem}; the document is refused")
