"""Every link of the README, the Marketplace page and docs/ resolves: a relative link names a file of
the repository, an absolute link into this repository names one too, and every #anchor is a heading
of its page as GitHub slugs it. The Marketplace renders overview.md away from the repository, so its
links are absolute."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import REPO
from markdown_links import heading_slugs, link_targets, slug

REPOSITORY = json.loads((REPO / "vss-extension.json").read_text())["repository"]["uri"]


def pages() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--", "README.md", "overview.md", "docs/*.md", "docs/**/*.md"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    found = {REPO / name for name in listed}
    found |= {REPO / "README.md", REPO / "overview.md", *(REPO / "docs").rglob("*.md")}  # new, untracked
    return sorted(path for path in found if path.is_file())


def local_target(page: Path, target: str, repo: Path) -> tuple[Path | None, str]:
    """(the file a link names, its anchor); no file for a link outside the repository."""
    address, _, anchor = target.partition("#")
    for prefix in (f"{REPOSITORY}/blob/main/", f"{REPOSITORY}/tree/main/"):
        if address.startswith(prefix):
            return repo / unquote(address.removeprefix(prefix)), anchor
    if address in (REPOSITORY, f"{REPOSITORY}/"):
        return repo / "README.md", anchor
    if "://" in address or address.startswith("mailto:"):
        return None, ""
    return (page.parent / unquote(address) if address else page), anchor


def problems(page: Path, repo: Path = REPO) -> list[str]:
    found = []
    name = page.relative_to(repo).as_posix()
    for target in link_targets(page.read_text(encoding="utf-8")):
        path, anchor = local_target(page, target, repo)
        if path is None:
            continue
        resolved = path.resolve()
        if not resolved.is_relative_to(repo.resolve()) or not resolved.exists():
            found.append(f"{name}: {target} names no file of the repository")
        elif anchor and (resolved.suffix != ".md" or anchor not in heading_slugs(resolved.read_text())):
            found.append(f"{name}: {target}: no heading #{anchor} in {resolved.name}")
    return found


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_link_resolves(page: Path) -> None:
    assert problems(page) == []


def test_the_pages_link_to_each_other() -> None:
    """Each docs/ page is reachable from the README, directly or through another page."""
    reached, queue = set(), [REPO / "README.md"]
    while queue:
        page = queue.pop()
        for target in link_targets(page.read_text()):
            path, _ = local_target(page, target, REPO)
            if path is not None and path.suffix == ".md" and path.is_file() and path.resolve() not in reached:
                reached.add(path.resolve())
                queue.append(path.resolve())
    unreached = [p.relative_to(REPO).as_posix() for p in pages() if p.resolve() not in reached]
    assert unreached == ["overview.md"]  # the Marketplace's page, reached from the Marketplace


def test_the_marketplace_page_links_only_absolutely() -> None:
    overview = (REPO / "overview.md").read_text()
    targets = link_targets(overview)
    assert targets, "overview.md links to the documentation"
    relative = [t for t in targets if "://" not in t and not t.startswith("#")]
    assert relative == [], "the Marketplace cannot resolve these; link to the repository instead"
    assert all(t.startswith(("#", REPOSITORY, "https://")) for t in targets)


def test_the_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## The `verify` step, again\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#the-verify-step-again) [gone](docs/b.md) [no anchor](docs/a.md#verify)\n"
        "[self](#top) [out](../../etc/passwd) [web](https://example.com/x) `[code](nowhere.md)`\n"
        f"[repo]({REPOSITORY}/blob/main/docs/a.md#a-page) [repo gone]({REPOSITORY}/blob/main/c.md)\n"
        "```\n[fenced](nowhere.md)\n```\n# Top\n"
    )
    assert problems(page, tmp_path) == [
        "README.md: docs/b.md names no file of the repository",
        "README.md: docs/a.md#verify: no heading #verify in a.md",
        "README.md: ../../etc/passwd names no file of the repository",
        f"README.md: {REPOSITORY}/blob/main/c.md names no file of the repository",
    ]


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [  # as github.com renders them
        ("Add it to a pipeline", "add-it-to-a-pipeline"),
        ("Deployment gates, bundles and interop", "deployment-gates-bundles-and-interop"),
        (
            "Gate outputs: a policy file and a Verification Summary Attestation",
            "gate-outputs-a-policy-file-and-a-verification-summary-attestation",
        ),
        ("The `verify` command", "the-verify-command"),
        ("The attestation stage (Build L3)", "the-attestation-stage-build-l3"),
        ("Python 3.11+ on the agent", "python-311-on-the-agent"),
        ("[Linked](https://x.y) heading", "linked-heading"),
    ],
)
def test_slugs_are_github_s(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_repeated_heading_gets_a_number() -> None:
    assert heading_slugs("# Notes\n## Notes\n```\n# not a heading\n```\n## Notes\n") == [
        "notes",
        "notes-1",
        "notes-2",
    ]
