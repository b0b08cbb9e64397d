"""Which parser reads a file, and which split a file's name implies.

Formats are named by their usual short names; ``auto`` picks one from the file
extension, after an optional ``.gz``.
"""

from __future__ import annotations

import re
from pathlib import Path

from kgserver.errors import ConfigurationError

FORMATS = ("nt", "nq", "ttl", "trig", "xml", "jsonld", "tsv")
"""Every format ``kgserver import --format`` accepts (plus ``auto``)."""

EXTENSIONS = {
    ".nt": "nt",
    ".nq": "nq",
    ".ttl": "ttl",
    ".trig": "trig",
    ".rdf": "xml",
    ".owl": "xml",
    ".xml": "xml",
    ".jsonld": "jsonld",
    ".tsv": "tsv",
}

SPLITS = ("train", "valid", "test")

# "train.nt.gz", "valid-2020.ttl", "test_part1.tsv": the split name, then a non-letter.
_SPLIT_PREFIX = re.compile(r"^(train|valid|test)(?![a-z])", re.IGNORECASE)


def is_gzip(path: Path) -> bool:
    """Whether the file is read through gzip (decided by the ``.gz`` suffix)."""
    return path.suffix.lower() == ".gz"


def detect_format(path: Path, requested: str = "auto") -> str:
    """The format to read ``path`` with: ``requested`` unless it is ``auto``."""
    if requested != "auto":
        if requested not in FORMATS:
            raise ConfigurationError(
                f"unknown format {requested!r}; choose one of auto, {', '.join(FORMATS)}"
            )
        return requested
    name = path.name[: -len(".gz")] if is_gzip(path) else path.name
    extension = Path(name).suffix.lower()
    try:
        return EXTENSIONS[extension]
    except KeyError:
        known = ", ".join(sorted(EXTENSIONS))
        raise ConfigurationError(
            f"cannot tell the format of {path} from its name (known extensions: {known}, "
            "each optionally followed by .gz); pass --format"
        ) from None


def split_from_name(path: Path) -> str | None:
    """``train``/``valid``/``test`` if the file name starts with one of them, else None."""
    match = _SPLIT_PREFIX.match(path.name)
    return match.group(1).lower() if match else None
