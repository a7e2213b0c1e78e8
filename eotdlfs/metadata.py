"""The rules every dataset or model record obeys: kinds, names and metadata.yml fields.

Server and client both validate with this module, so a name the client accepts is
one the server accepts, and each error names the field and the rule it broke.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

KINDS = ("datasets", "models")
METADATA_FILE = "metadata.yml"
# A metadata.yml holds a few fields. PyYAML takes ~2 s and ~25 MB of memory per MB it parses (8 MB:
# 15 s, 183 MB), and a flush does it in the mount process: a big file there is a mistake to report.
MAX_METADATA_BYTES = 1 << 20

NAME_MIN, NAME_MAX = 3, 45
_NAME_CHARS = re.compile(r"^[A-Za-z][A-Za-z0-9-]*\Z")  # \Z: "$" lets a final newline through


def record_noun(kind: str) -> str:
    """'Dataset' or 'Model': the word the API's error strings start with."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}, expected one of {', '.join(KINDS)}")
    return kind[:-1].capitalize()


class MetadataError(ValueError):
    """A metadata field breaks a rule; `field` names it."""

    def __init__(self, field: str, rule: str):
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def validate_name(name: Any) -> str:
    if not isinstance(name, str):
        raise MetadataError("name", "must be a string")
    if not NAME_MIN <= len(name) <= NAME_MAX:
        raise MetadataError("name", f"must be {NAME_MIN} to {NAME_MAX} characters long, got {len(name)}")
    if not _NAME_CHARS.match(name):
        raise MetadataError(
            "name", "may use only letters, digits and '-', and must start with a letter"
        )
    return name


@dataclass(frozen=True)
class Metadata:
    """The four fields of metadata.yml that the API stores on a record."""

    name: str
    authors: list[str]
    license: str
    source: str

    @classmethod
    def from_mapping(cls, data: Any) -> "Metadata":
        if not isinstance(data, Mapping):
            raise MetadataError(METADATA_FILE, "must be a mapping of name, authors, license, source")
        missing = [f for f in ("name", "authors", "license", "source") if data.get(f) in (None, "", [])]
        if missing:
            raise MetadataError(missing[0], "is required")
        authors = data["authors"]
        if isinstance(authors, str):
            authors = [authors]
        if not isinstance(authors, list) or not all(isinstance(a, str) and a for a in authors):
            raise MetadataError("authors", "must be a list of names")
        license_, source = data["license"], data["source"]
        if not isinstance(license_, str):
            raise MetadataError("license", "must be a string")
        if not isinstance(source, str) or not source.startswith("http"):
            raise MetadataError("source", "must be a URL starting with http")
        return cls(name=validate_name(data["name"]), authors=authors, license=license_, source=source)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_metadata_size(size: int) -> None:
    """MetadataError when a metadata.yml of SIZE bytes is more than one may be (read nothing bigger)."""
    if size > MAX_METADATA_BYTES:
        raise MetadataError(METADATA_FILE, f"is {size:,} bytes, more than the {MAX_METADATA_BYTES:,} a metadata.yml "
                            "may have (name, authors, license, source and a few more fields)")


def load_metadata(folder: Path) -> Metadata:
    """Read and validate FOLDER/metadata.yml; raise MetadataError naming what is wrong."""
    path = Path(folder) / METADATA_FILE
    try:
        check_metadata_size(path.stat().st_size)
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MetadataError(METADATA_FILE, f"not found in {folder}") from None
    except UnicodeDecodeError:
        raise MetadataError(METADATA_FILE, "is not UTF-8 text") from None
    import yaml  # here, not above: ~9 ms of every eotdl:// script's and mount's start, which read no metadata.yml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MetadataError(METADATA_FILE, f"is not valid YAML ({exc.__class__.__name__})") from exc
    return Metadata.from_mapping(data)
