"""Pack a staged folder into one payload: `NAME.tar.xz` plus `NAME.json`, the manifest the step checks it by.

    >>> write_payload(Path("build/payload/linux-x86_64"), Path("lib"), "linux-x86_64")  # doctest: +SKIP

The tar is solid and xz-compressed, its members sorted by path inside their top folder first, so the
same file built for Python 3.11, 3.12, 3.13 and 3.14 sits side by side and lzma stores the repeats once.
Every byte is fixed by the input (no times, owners or modes from the build machine). The manifest
(archive digest, and each file's SHA-256) ships beside the archive, outside the cache the step unpacks
into, so task/launch.py can check both the archive and, on every run, what it unpacked.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import tarfile
from pathlib import Path

# Type stubs are for editors and type checkers; no import reads them.
STRIPPED = {".pyi"}


def payload_files(staged: Path) -> list[tuple[str, Path]]:
    files = [
        (path.relative_to(staged).as_posix(), path)
        for path in staged.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in STRIPPED
    ]

    def similar_first(item: tuple[str, Path]) -> tuple[str, str]:
        top, _, rest = item[0].partition("/")
        return rest, top

    return sorted(files, key=similar_first)


def write_payload(staged: Path, lib: Path, name: str) -> dict[str, object]:
    """Write lib/NAME.tar.xz and lib/NAME.json from the files under staged; return the manifest."""
    files = payload_files(staged)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for relative, path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(relative)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    archive = lzma.compress(raw.getvalue(), format=lzma.FORMAT_XZ, preset=6)
    (lib / f"{name}.tar.xz").write_bytes(archive)
    manifest: dict[str, object] = {
        "archive": f"{name}.tar.xz",
        "sha256": hashlib.sha256(archive).hexdigest(),
        "unpacked": sum(path.stat().st_size for _, path in files),
        "files": {relative: hashlib.sha256(path.read_bytes()).hexdigest() for relative, path in files},
    }
    (lib / f"{name}.json").write_text(json.dumps(manifest, indent=0, sort_keys=True) + "\n")
    return manifest
