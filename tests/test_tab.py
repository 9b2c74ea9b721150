"""The Provenance tab, as shipped in the .vsix, in Debian's Chromium: framed by a stand-in for the run
page that answers the SDK's handshake, reading the run's attachments that the real step wrote from a
local HTTPS server speaking the Build attachments API (as Azure DevOps Server 2022 does: api-version
7.0 at most). Each test leaves a screenshot in build/screenshots/."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from conftest import COMMIT, REPO, AzureStack
from fakes import CertificateAuthority, HttpsServer, Request, Response, json_response
from pipeline_schema import PipelineValidator, load_manifest, task_entry, task_manifest
from registry import DockerRegistry
from slsa_provenance import step
from slsa_provenance.signing.keys import fingerprint, load_public_key
from test_registry import acr, registry, repository  # noqa: F401 (the real registry's fixtures, asked for by name)
from test_run_summary import attached, generate, step_env, validator, verify

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason="Debian's chromium is not installed (apt-get install chromium)"
    ),
]
SCREENSHOTS = REPO / "build" / "screenshots"
DRIVER = REPO / "tests" / "js" / "tab-browser.js"
HOST_PAGE = REPO / "tests" / "js" / "tab-host.html"
TOKEN = "tab-test-token-4f7d2c"  # what tab-host.html hands out as the SDK's access token
PROJECT_ID = "6ce954b1-ce1f-45d1-b94d-e6bf2464ba2c"
LIST = f"/DefaultCollection/{PROJECT_ID}/_apis/build/builds/836/attachments/slsa-provenance"
CONTENT = f"/DefaultCollection/{PROJECT_ID}/_apis/distributedtask/hubs/build/plans/p1/timelines/p1/records/"
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css"}


class RunPage(HttpsServer):
    """The run page's origin: the host page, the tab's files from the .vsix, and the attachments."""

    def __init__(
        self, ca: CertificateAuthority, tab: Path, attachments: dict[str, bytes | None], token: str = TOKEN
    ) -> None:
        super().__init__(ca)
        self.tab, self.attachments, self.token = tab, attachments, token
        self.elsewhere_names: set[str] = set()  # linked on another origin (this server, by another name)
        self.route(
            "GET", r"/host\.html", lambda _: (200, {"Content-Type": TYPES[".html"]}, HOST_PAGE.read_bytes())
        )
        self.route("GET", r"/favicon\.ico", lambda _: (204, {}, b""))
        self.route("GET", r"/tab/[a-z]+\.[a-z]+", self._tab_file)
        self.route("GET", re.escape(LIST), self._list)
        self.route("GET", re.escape(CONTENT) + r"[0-9]+/attachments/slsa-provenance/[^/]+", self._content)

    @property
    def elsewhere(self) -> str:
        return self.url.replace("127.0.0.1", "localhost")

    def _tab_file(self, request: Request) -> Response:
        path = self.tab / Path(request.path).name
        return (200, {"Content-Type": TYPES[path.suffix]}, path.read_bytes())

    def _list(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return json_response({"message": "TF400813: not authorized"}, 401)
        accept = request.headers.get("accept", "")
        version = re.search(r"api-version=([0-9.]+)", accept)
        if not version or float(version.group(1)) > 7.0:
            return json_response(
                {
                    "typeKey": "VssVersionOutOfRangeException",
                    "message": f"The requested REST API version of {version and version.group(1)} is out of "
                    "range for this server. The latest REST API version this server supports is 7.0.",
                },
                400,
            )
        listed = [
            {
                "name": name,
                "_links": {
                    "self": {
                        "href": f"{self.elsewhere if name in self.elsewhere_names else self.url}"
                        f"{CONTENT}{index}/attachments/slsa-provenance/{quote(name)}"
                    }
                },
            }
            for index, name in enumerate(self.attachments)
        ]
        return json_response(
            listed if "noArrayWrap=true" in accept else {"count": len(listed), "value": listed}
        )

    def _content(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return json_response({"message": "TF400813: not authorized"}, 401)
        content = self.attachments[unquote(request.path.rsplit("/", 1)[1])]
        if content is None:
            return json_response({"message": "VS402912: the attachment store is unavailable"}, 500)
        return (200, {"Content-Type": "application/octet-stream"}, content)


def spki_pin(ca: CertificateAuthority) -> str:
    """The leaf's public key pin: Chromium trusts that one certificate, and nothing else, without a CA."""
    leaf = x509.load_pem_x509_certificate(ca.cert_file.read_bytes())
    spki = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def show(
    request: pytest.FixtureRequest,
    extension: Path,
    ca: CertificateAuthority,
    tmp_path: Path,
    summaries: list[dict[str, Any]],
    **options: Any,
) -> tuple[dict[str, Any], RunPage]:
    """Open the run page holding these summaries; what the tab shows, measured in the page."""
    for summary in summaries:
        assert list(validator().iter_errors(summary)) == []
    attachments: dict[str, bytes | None] = {
        f"{s['command']}-{i}.json": json.dumps(s, ensure_ascii=False).encode()
        for i, s in enumerate(summaries)
    }
    unchecked = options.pop("unchecked", {})  # not summaries of this version; None: a server error
    attachments |= unchecked
    server = RunPage(ca, extension / "tab", attachments, options.pop("token", TOKEN))
    server.elsewhere_names = set(options.pop("elsewhere", ()))
    server.start()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    screenshot = SCREENSHOTS / f"{request.node.name}.png"
    screenshot.unlink(missing_ok=True)
    theme = options.pop("theme", "light")
    refused = options.pop("expected_error", "")  # a console error the test provokes on purpose
    config = {
        "url": f"{server.url}/host.html?theme={theme}",
        "screenshot": str(screenshot),
        "spki": spki_pin(ca),
        "userDataDir": str(tmp_path / "chromium-profile"),
        "executablePath": str(CHROMIUM),
        **options,
    }
    node = shutil.which("node")
    assert node, "node runs the browser driver"
    try:
        result = subprocess.run(
            [node, str(DRIVER), json.dumps(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert screenshot.stat().st_size > 10_000, "the screenshot is empty"
    report: dict[str, Any] = json.loads(result.stdout)
    errors = [e for e in report["consoleErrors"] if not (refused and e.startswith(refused))]
    assert errors == [] and report["dialogs"] == [], report
    return report, server


@pytest.fixture
def page(
    request: pytest.FixtureRequest,
    extension: Path,
    certificate_authority: CertificateAuthority,
    tmp_path: Path,
):  # type: ignore[no-untyped-def]
    return lambda summaries, **options: show(
        request, extension, certificate_authority, tmp_path, summaries, **options
    )


def test_a_generate_summary_shows_what_was_attested(
    page, tmp_path: Path, drop: Path, azure: AzureStack, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    key = f"https://127.0.0.1:{azure.vault.port}/keys/p256"
    inputs = {"command": "generate", "dropFolder": str(drop), "signingMethod": "keyVault", "keyVaultKey": key}
    env = {**step_env(tmp_path, **inputs), **azure.env}
    assert step.main(env) == 0
    _, summary = attached(capsys.readouterr().out)
    report, server = page([summary], copy=True, height=1500)
    assert report["loaded"] == "succeeded"
    assert report["calls"][0] == "initialHandshake" and "getAccessToken" in report["calls"]
    assert report["names"] == [s["name"] for s in summary["subjects"]["listed"]]
    for shown in (
        "Source",
        "refs/heads/main",
        "Confirmed by the server",
        "Azure Key Vault key",
        "L2",
        summary["builder"]["id"],
        summary["signer"]["keyId"],
        f"sha256:{summary['statement']['sha256']}",
        "_manifest/spdx_2.2/manifest.spdx.json",
        "5 subjects",
    ):
        assert shown in report["text"], shown
    assert f"{azure.env['BUILD_REPOSITORY_URI']}/commit/{COMMIT}" in report["links"]
    first = summary["subjects"]["listed"][0]["sha256"]
    assert (report["copyLabel"], report["clipboard"]) == ("Copied", f"sha256:{first}")
    assert report["renderedAt"] is not None and report["renderedAt"] < 1000
    listing, content = (r for r in server.requests if "/_apis/" in r.path)
    assert "api-version=6.0-preview.2" in listing.headers["accept"]  # Server 2020 and 2022 answer it
    assert {listing.headers["authorization"], content.headers["authorization"]} == {f"Bearer {TOKEN}"}
    assert report["background"] == "rgb(255, 255, 255)"


def test_a_gate_shows_every_check_and_the_one_that_failed_in_the_dark_theme(
    page, tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    generated = generate(tmp_path / "g", drop, private, capsys)
    failed = verify(tmp_path / "v", drop, public, "refs/tags/v*", capsys)
    referrer = "sha256:" + "cd" * 32  # as test_registry's step run records them, without a registry here
    image = {"name": "contoso.azurecr.io/web", "digest": "sha256:" + "ab" * 32}
    generated["images"] = [{**image, "referrers": [{"digest": referrer, "tagIndex": True, "cosignTag": ""}]}]
    report, _ = page([generated, failed], theme="dark", height=2000)
    assert "Verification failed" in report["badges"] and "Attested" in report["badges"]
    assert [row[0] for row in report["checks"]] == [f"({n})" for n in range(1, 12)]
    ref = next(row for row in report["checks"] if row[0] == "(7)")
    assert ref[1:] == ["ref", "Failed", "refs/heads/main", "refs/tags/v*"]
    assert [row[2] for row in report["checks"]].count("Failed") == 1
    assert "workflow.ref: got 'refs/heads/main', expected 'refs/tags/v*'" in report["text"]
    assert f"{referrer} (and tag index: no referrers API)" in report["text"]
    assert report["background"] == "rgb(27, 26, 25)"


def test_ten_thousand_subjects_render_in_under_a_second_and_scroll(
    page, tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    summary = generate(tmp_path / "g", drop, key_files["ed25519"][0], capsys)
    names = [f"bin/module-{i:05d}.dll" for i in range(10_000)]
    summary["subjects"] = {
        "total": 10_000,
        "listed": [{"name": n, "sha256": hashlib.sha256(n.encode()).hexdigest()} for n in names],
    }
    report, _ = page([summary], scrollToEnd=True, filter="module-0999", filterCount="10 of 10,000")
    timing = f"{report['renderedAt']:.0f} ms from the frame's start, {report['renderMs']:.0f} ms to build the cards"
    print(
        f"10,000 subjects: first render {timing}; scroll to the end {report['scrollMs']} ms; {report['rows']} rows"
    )
    assert report["renderedAt"] < 1000, f"first render took {timing}"
    assert report["counts"] == ["10,000 subjects"]
    assert report["rows"] < 60, "every row was put in the page: the list is not virtual"
    assert report["namesAfterScroll"][-1] == "bin/module-09999.dll"
    assert report["filtered"]["names"] == [f"bin/module-0999{d}.dll" for d in range(10)]
    assert report["calls"].count("resize") >= 2, "the frame was not resized to the filtered list"


def test_a_run_without_provenance_says_how_to_add_the_step(page) -> None:  # type: ignore[no-untyped-def]
    report, _ = page([], height=600)
    assert report["loaded"] == "succeeded"
    assert "No provenance in this run" in report["text"]
    [step_shown] = yaml.load(report["text"].split("appears here.", 1)[1], Loader=yaml.BaseLoader)
    _, entry = task_entry(load_manifest(task_manifest(REPO)))
    PipelineValidator({"type": "object", **entry}).validate(step_shown)  # a step that fits task.json
    assert step_shown["task"] == "SlsaProvenance@1"


def test_hostile_names_are_shown_as_text(
    page, tmp_path: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    hostile = [
        '<img src=x onerror="window.parent.pwned=1;alert(1)">.txt',
        "##vso[task.complete result=Succeeded]done.bin",
        "invoice-\u202eexe.pdf",
    ]
    drop = tmp_path / "drop"
    drop.mkdir()
    for name in hostile:
        (drop / name).write_bytes(name.encode())
    ref = 'refs/heads/<img src=x onerror="window.parent.pwned=1">'
    summary = generate(tmp_path / "g", drop, key_files["ed25519"][0], capsys, BUILD_SOURCEBRANCH=ref)
    report, _ = page([summary], height=1300)
    assert sorted(report["names"]) == sorted(hostile)
    assert f"Ref\n{ref}\n" in report["text"] and f"@{ref}" in report["text"]  # the ref and the builder id
    assert report["images"] == 0 and report["pwned"] is False
    assert "bidi" in report["badges"]


def test_an_unreadable_or_newer_summary_is_named_and_the_others_are_shown(
    page, tmp_path: Path, drop: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    summary = generate(tmp_path / "g", drop, key_files["ed25519"][0], capsys)
    newer = json.dumps({**summary, "schemaVersion": 2}).encode()
    unchecked = {
        "verify-lost.json": None,
        "verify-newer.json": newer,
        "zz-not-json.json": b"{",
        "zz-not-a-summary.json": b'{"schemaVersion": 1, "command": "generate", "subjects": 5}',
        "verify-elsewhere.json": json.dumps(summary).encode(),
    }
    served_500 = "Failed to load resource: the server responded with a status of 500"
    report, server = page(
        [summary],
        unchecked=unchecked,
        elsewhere=["verify-elsewhere.json"],
        height=1600,
        expected_error=served_500,
    )
    elsewhere = "verify-elsewhere.json\n\nThis summary could not be shown: its address is not on "
    assert elsewhere + server.url in report["text"]
    assert not [r for r in server.requests if r.path.endswith("verify-elsewhere.json")], (
        "the token went elsewhere"
    )
    assert report["loaded"] == "succeeded" and report["names"][0] == "README.txt"
    assert "verify-lost.json" in report["text"] and "the server answered 500" in report["text"]
    assert "summary version 2 is not one this tab knows (1); update the extension" in report["text"]
    assert "zz-not-json.json" in report["text"] and "This summary could not be shown: " in report["text"]
    assert (
        "zz-not-a-summary.json" in report["text"]
        and "it is not a summary this tab can read" in report["text"]
    )


def test_a_refused_token_is_reported_in_the_tab(page) -> None:  # type: ignore[no-untyped-def]
    refused = "Failed to load resource: the server responded with a status of 401"
    report, server = page([], token="another-token", height=400, expected_error=refused)
    assert report["loaded"] == "succeeded"
    assert "The provenance of this run could not be loaded: TF400813: not authorized" in report["text"]
    listings = [r for r in server.requests if r.path == LIST]
    assert len(listings) == 2  # the API client asks for a fresh token once, then gives up


def test_a_gate_lists_the_artifacts_that_changed(
    page, tmp_path: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    private, public = key_files["ecdsa-p256"]
    drop = tmp_path / "drop"
    (drop / "bin").mkdir(parents=True)
    for index in range(205):
        (drop / "bin" / f"part-{index:03d}.bin").write_bytes(b"built %d" % index)
    generate(tmp_path / "g", drop, private, capsys)
    for index in range(203):
        (drop / "bin" / f"part-{index:03d}.bin").write_bytes(b"tampered %d" % index)
    summary = verify(tmp_path / "v", drop, public, "refs/heads/main", capsys)
    report, _ = page([summary], height=1400)
    artifacts = next(row for row in report["checks"] if row[0] == "(9)")
    assert artifacts[1:4] == ["artifacts", "Failed", "2 of 205 artifacts are subjects"]
    assert "Failed artifacts (203 of 205)" in report["text"]
    assert "(9) subject: bin/part-000.bin sha256 got " in report["text"]
    assert "and 3 more: the step's log lists every one" in report["text"]


def test_an_image_gate_shows_each_image_and_every_key_that_verified(
    page, request: pytest.FixtureRequest, tmp_path: Path, key_files, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    """Two images attested by the packaged step with two keys, verified together: the tab lists both
    with where each attestation was found and by which key; a third image without one fails."""
    stack: AzureStack = request.getfixturevalue("acr")  # the real registry's fixtures, by name
    server: DockerRegistry = request.getfixturevalue("registry")
    images, fingerprints = [], []
    for key_type in ("ecdsa-p256", "ecdsa-p384"):
        private, public = key_files[key_type]
        repo = repository()
        image = f"{server.host}/{repo}@{server.push_image(repo)}"
        inputs = {
            "command": "generate",
            "dropFolder": str(tmp_path / key_type),
            "signingMethod": "localKey",
            "localKeyFile": str(private),
            "images": image,
            "attachToImages": "true",
        }
        (tmp_path / key_type).mkdir()
        assert step.main({**step_env(tmp_path, **inputs), **stack.env}) == 0, capsys.readouterr().out
        capsys.readouterr()
        images.append(image)
        fingerprints.append(fingerprint(load_public_key(public.read_bytes(), str(public))))
    bare = repository()
    unattested = f"{server.host}/{bare}@{server.push_image(bare)}"
    inputs = {
        "command": "verify",
        "verifyImages": "\n".join([*images, unattested]),
        "trustedKeys": "\n".join(str(key_files[k][1]) for k in ("ecdsa-p256", "ecdsa-p384")),
        "expectedRef": "refs/heads/main",
    }
    assert step.main({**step_env(tmp_path, **inputs), **stack.env}) == 0
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Failed]1 of 3 images failed verification" in out, out
    _, summary = attached(out)
    assert summary["keyId"] == ", ".join(sorted(fingerprints))
    report, _ = page([summary], height=1600)
    assert "Verification failed" in report["badges"]
    assert "Images (3)" in report["text"]
    for image, key in zip(images, fingerprints, strict=True):
        assert image in report["text"]
        assert f"verified, signed by {key}" in report["text"]
    assert f"{unattested}" in report["text"] and "Failed" in report["text"]
    assert ", ".join(sorted(fingerprints)) in report["text"]  # "Verified with key"
    assert "no attestation found (referrers, tag sha256-<hex>, cosign .att)" in report["text"]
    assert f"Checks (the first image: {images[0]})" in report["text"]
