"""Opening a source file: its content hash, and a byte stream that reports progress.

The hash is taken in a pass of its own before parsing because blank nodes are
named after it (see ``kgserver.store.models.Term``) and those names are needed
from the first triple on. Hashing is much faster than parsing, so this costs
little; the parse then streams the file (decompressing ``.gz`` on the fly) and
never holds more than the parser's buffer of it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from kgserver.rdf.formats import is_gzip

_BUFFER = 1 << 20


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of the file as stored (compressed bytes for ``.gz``)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@contextmanager
def open_source(path: Path) -> Iterator[tuple[BinaryIO, BinaryIO]]:
    """``(stream, raw)``: decompressed bytes to parse, and the file whose ``tell()``
    says how far into the file on disk the parse has got."""
    with path.open("rb") as raw:
        if is_gzip(path):
            # GzipFile reads (and readline()s) slowly in small steps; a buffer in
            # front of it serves the parsers' reads from memory.
            with io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _BUFFER) as stream:
                yield stream, raw
        else:
            yield raw, raw
