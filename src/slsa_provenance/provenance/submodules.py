"""The git submodules that the checked-out commit pins, as resolved dependencies.

    >>> submodules(Path("s"), "https://dev.azure.com/contoso/web/_git/web")   # doctest: +SKIP
    [ResourceDescriptor(uri='git+https://dev.azure.com/contoso/web/_git/lib', name='libs/lib', ...)]

Read from the sources folder with git: each gitlink of the index (the commit the superproject
pins, whether or not the submodule was checked out) and its URL from `.gitmodules`; relative URLs
are resolved against the repository's own URL. Top-level submodules only.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from slsa_provenance.errors import Error
from slsa_provenance.provenance.statement import ResourceDescriptor


def submodules(sources: Path, repository_url: str) -> list[ResourceDescriptor]:
    """Raises Error when git cannot read the sources folder's index."""
    if not (sources / ".gitmodules").is_file():
        return []
    pinned = {}
    for entry in _git(sources, "ls-files", "--stage", "-z").split("\0"):
        mode, _, rest = entry.partition(" ")
        if mode == "160000":
            commit, _, path = rest.partition("\t")
            pinned[path] = commit.split(" ")[0]
    paths: dict[str, str] = {}
    urls: dict[str, str] = {}
    config = _git(
        sources, "config", "-f", ".gitmodules", "-z", "--get-regexp", r"^submodule\..*\.(path|url)$"
    )
    for item in filter(None, config.split("\0")):
        key, _, value = item.partition("\n")
        name, _, field = key.removeprefix("submodule.").rpartition(".")
        (paths if field == "path" else urls)[name] = value
    found = []
    for name, path in sorted(paths.items(), key=lambda item: item[1]):
        if path in pinned and name in urls:
            url = _resolve(urls[name], repository_url)
            found.append(ResourceDescriptor(uri=f"git+{url}", name=path, digest={"gitCommit": pinned[path]}))
    return found


def _resolve(url: str, base: str) -> str:
    if not url.startswith(("./", "../")):
        return url
    parts = urlsplit(base)
    path = posixpath.normpath(posixpath.join(parts.path.rstrip("/"), url))
    return urlunsplit(parts._replace(path=path))


def _git(folder: Path, *args: str) -> str:
    import shutil  # here: most drops have no submodules, and a run without them imports neither
    import subprocess

    git = shutil.which("git")
    if git is None:
        raise Error(
            "git is not installed, so the sources' submodules cannot be read", "install git on the agent"
        )
    run = subprocess.run(  # noqa: S603 (fixed arguments, no shell)
        [git, "-c", "safe.directory=*", "-C", str(folder), *args], capture_output=True, text=True, check=False
    )
    if run.returncode not in (0, 1):  # 1: --get-regexp found nothing
        raise Error(f"git cannot read {folder}: {run.stderr.strip()[:200]}", "check the sources folder")
    return run.stdout
