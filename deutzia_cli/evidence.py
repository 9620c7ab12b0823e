"""`deutzia evidence`: one zip file an auditor can keep, holding an item's history (JSON, exact, and CSV), the coverage
of its days, a manifest of the query, and the SHA-256 of each file in `sha256sum` form, with a README saying how to
check them and the trail's own files. The entries stream through temporary files, so a long history needs no memory
of its size; an existing file is never overwritten.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HISTORY_JSON, HISTORY_CSV, COVERAGE_JSON, MANIFEST, SUMS, README = (
    "history.json",
    "history.csv",
    "coverage.json",
    "manifest.json",
    "SHA256SUMS",
    "README.txt",
)
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Bundle:
    """What `write_bundle` wrote: the file, how many entries, and each member's SHA-256."""

    path: Path
    entries: int
    digests: dict[str, str]


def write_bundle(
    path: Path,
    entries: Iterable[dict[str, Any]],
    csv_header: Sequence[str],
    csv_row: Callable[[dict[str, Any]], Sequence[object]],
    coverage: dict[str, Any],
    manifest: dict[str, Any],
    readme: str,
) -> Bundle:
    """Write the bundle to `path` (FileExistsError if it exists), streaming `entries` once into both histories."""
    digests: dict[str, str] = {}
    count = 0
    with tempfile.TemporaryDirectory() as scratch:
        history_json, history_csv = Path(scratch, HISTORY_JSON), Path(scratch, HISTORY_CSV)
        with history_json.open("w", encoding="utf-8") as as_json, history_csv.open("w", encoding="utf-8") as as_csv:
            writer = csv.writer(as_csv)
            writer.writerow(csv_header)
            as_json.write("[")
            for count, entry in enumerate(entries, start=1):
                as_json.write(("," if count > 1 else "") + "\n" + json.dumps(entry, ensure_ascii=False))
                writer.writerow(csv_row(entry))
            as_json.write("\n]\n")
        members = {
            HISTORY_JSON: history_json,
            HISTORY_CSV: history_csv,
            COVERAGE_JSON: _text_file(scratch, COVERAGE_JSON, json.dumps(coverage, indent=1, ensure_ascii=False)),
        }
        for name, member in members.items():
            digests[name] = _sha256(member)
        manifest = {**manifest, "entries": count, "files": dict(digests)}
        members[MANIFEST] = _text_file(scratch, MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
        digests[MANIFEST] = _sha256(members[MANIFEST])
        sums = "".join(f"{digest}  {name}\n" for name, digest in digests.items())
        members[SUMS] = _text_file(scratch, SUMS, sums)
        members[README] = _text_file(scratch, README, readme)
        with _exclusive(path) as target, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as bundle:
            for name, member in members.items():
                bundle.write(member, name)
    return Bundle(path, count, digests)


def _text_file(folder: str, name: str, text: str) -> Path:
    member = Path(folder, name)
    member.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    return member


def _sha256(member: Path) -> str:
    digest = hashlib.sha256()
    with member.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[IO[bytes]]:
    """`path`, opened for writing only if it does not exist yet (FileExistsError), and removed if writing it fails."""
    stream = path.open("xb")
    try:
        yield stream
    except BaseException:
        stream.close()
        path.unlink(missing_ok=True)
        raise
    finally:
        stream.close()
