"""Images against a real registry (Debian's docker-registry 2.8.2, TLS, token auth from a local ACR token
service): resolve, generate, attach as referrer + tag index and cosign .att, verify by reference."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import REPO, AzureStack, run_cli, statement_of
from fakes import HttpsServer, Request
from registry import OCI_INDEX, OCI_MANIFEST, AcrTokens, DockerRegistry, ReferrersProxy
from slsa_provenance.azure.agent import AgentRun
from test_run_summary import attached, step_env

pytestmark = pytest.mark.integration
BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
PREDICATE = "https://slsa.dev/provenance/v1"
STARTED = "2026-11-23T09:12:40.5843216Z"


@pytest.fixture(scope="session")
def registry(certificate_authority, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerRegistry]:  # type: ignore[no-untyped-def]
    if shutil.which("docker-registry") is None:
        pytest.skip(
            "Debian's docker-registry is not installed (apt-get install docker-registry; .ci/run does)"
        )
    folder = tmp_path_factory.mktemp("registry")
    tokens = AcrTokens(certificate_authority, folder).start()
    server = DockerRegistry(certificate_authority, tokens, folder)
    yield server
    server.stop()
    tokens.stop()


@pytest.fixture
def acr(azure: AzureStack, registry: DockerRegistry) -> Iterator[AzureStack]:
    """The Azure stack, with the registry's token service trusting its Entra."""
    registry.tokens.entra = azure.entra
    registry.tokens.identity_actions.clear()
    registry.tokens.logins.clear()
    yield azure


def repository() -> str:
    return f"team/app-{uuid.uuid4().hex[:8]}"


def generate(acr: AzureStack, key: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    run = run_cli(
        "generate",
        "--signer",
        f"file:{key}",
        "--output-dir",
        out,
        *extra,
        env={**acr.env, "HOME": str(out.parent)},
    )
    return run.returncode, run.stdout, run.stderr


def verify(acr: AzureStack, public: Path, *images: str) -> tuple[int, str, str]:
    args: list[str | Path] = ["verify", "--key", public]
    for image in images:
        args += ["--image", image]
    run = run_cli(*args, env={**acr.env, "HOME": "/nonexistent"})
    return run.returncode, run.stdout, run.stderr


def attach_new_image(
    acr: AzureStack, registry: DockerRegistry, key: Path, tmp_path: Path
) -> tuple[str, str, tuple[int, str, str]]:
    """A new image pushed, then generate --attach for it alone: (repository, digest, the run)."""
    repo = repository()
    digest = registry.push_image(repo)
    return (
        repo,
        digest,
        generate(acr, key, tmp_path / "out", "--image", f"{registry.host}/{repo}@{digest}", "--attach"),
    )


def registry_requests(out: str) -> tuple[int, int]:
    """(to resolve, to attach) from generate's `registry:` line."""
    words = out.split("registry:  ")[1].split()
    return int(words[0]), int(words[5])


def expected_referrer(subject: str, subject_size: int, bundle: bytes) -> bytes:
    """oci-notes §1.1: the exact manifest sigstore-js / actions/attest write, field for field."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": BUNDLE,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": EMPTY, "size": 2},
            "layers": [{"mediaType": BUNDLE, "digest": _digest(bundle), "size": len(bundle)}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {
                "org.opencontainers.image.created": STARTED,
                "dev.sigstore.bundle.content": "dsse-envelope",
                "dev.sigstore.bundle.predicateType": PREDICATE,
            },
        },
        separators=(",", ":"),
    ).encode()


def expected_entry(referrer: bytes) -> dict[str, object]:
    return {
        "mediaType": OCI_MANIFEST,
        "digest": _digest(referrer),
        "size": len(referrer),
        "artifactType": BUNDLE,
        "annotations": {
            "org.opencontainers.image.created": STARTED,
            "dev.sigstore.bundle.content": "dsse-envelope",
            "dev.sigstore.bundle.predicateType": PREDICATE,
        },
    }


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_attach_writes_the_spec_shaped_referrer_and_tag_index_and_verifies_by_reference(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, drop: Path, tmp_path: Path
) -> None:
    repo = repository()
    digest = registry.push_image(repo)
    size = len(registry.get(repo, f"manifests/{digest}").content)
    image = f"{registry.host}/{repo}@{digest}"
    private, public = key_files["ecdsa-p256"]
    code, out, err = generate(
        acr, private, tmp_path / "out", "--drop", str(drop), "--image", image, "--attach"
    )
    assert code == 0, err
    statement = statement_of(tmp_path / "out" / "provenance.intoto.jsonl")
    subjects = {s["name"]: s["digest"]["sha256"] for s in statement["subject"]}  # type: ignore[attr-defined, index]
    assert subjects[f"{registry.host}/{repo}"] == digest.removeprefix("sha256:")
    assert "bin/app.exe" in subjects
    bundle = (tmp_path / "out" / "provenance.sigstore.json").read_bytes()
    referrer = expected_referrer(digest, size, bundle)
    assert f"attached:  {registry.host}/{repo}@{_digest(referrer)} (and tag index" in out

    stored = registry.get(repo, f"manifests/{_digest(referrer)}", OCI_MANIFEST)
    assert stored.content == referrer
    assert registry.get(repo, f"blobs/{EMPTY}").content == b"{}"
    assert registry.get(repo, f"blobs/{_digest(bundle)}").content == bundle
    index = registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX)
    assert index.headers["Content-Type"] == OCI_INDEX
    assert (
        index.content
        == json.dumps(
            {"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": [expected_entry(referrer)]},
            separators=(",", ":"),
        ).encode()
    )

    pulled = tmp_path / "pulled.sigstore.json"
    pulled.write_bytes(registry.get(repo, f"blobs/{_digest(bundle)}").content)
    from test_interop import sigstore_js

    assert sigstore_js(pulled, public, "PKIX_ECDSA_P256_SHA_256") == "VERIFIED"

    started = time.monotonic()
    code, out, err = verify(acr, public, image)
    elapsed = time.monotonic() - started
    assert code == 0, out + err
    assert f"PASSED: {image} (referrer {_digest(referrer)}, signed by " in out
    assert elapsed < 5  # the process included; docs/images.md reports the measured figure

    code, out, err = generate(
        acr, private, tmp_path / "again", "--drop", str(drop), "--image", image, "--attach"
    )
    assert code == 0, err
    manifests = json.loads(registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).content)[
        "manifests"
    ]
    assert len(manifests) == 2 and manifests[0] == expected_entry(referrer)


def test_a_tag_is_resolved_and_images_alone_need_no_drop(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    repo = repository()
    digest = registry.push_image(repo, "release-1")
    private, public = key_files["ecdsa-p256"]
    code, out, err = generate(acr, private, tmp_path / "out", "--image", f"{registry.host}/{repo}:release-1")
    assert code == 0, err
    assert f"image:     {registry.host}/{repo}@{digest}" in out
    statement = statement_of(tmp_path / "out" / "provenance.intoto.jsonl")
    assert statement["subject"] == [{"digest": {"sha256": digest[7:]}, "name": f"{registry.host}/{repo}"}]
    assert not (tmp_path / "drop").exists()

    code, out, err = verify(acr, public, f"{registry.host}/{repo}:release-1")
    assert code == 1, err
    assert f"resolved {registry.host}/{repo}:release-1 to {digest}" in out
    assert "no attestation found" in out


def test_docker_output_file_names_the_pushed_images(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    repo = repository()
    digest = registry.push_image(repo)
    output = tmp_path / "docker-push.txt"
    output.write_text(
        f"The push refers to repository [{registry.host}/{repo}]\n"
        "5f70bf18a086: Pushed\n"
        f"v1: digest: {digest} size: 528\n"
        f"latest: digest: {digest} size: 528\n"
    )
    code, _, err = generate(acr, key_files["ecdsa-p256"][0], tmp_path / "out", "--docker-output", str(output))
    assert code == 0, err
    statement = statement_of(tmp_path / "out" / "provenance.intoto.jsonl")
    assert statement["subject"] == [{"digest": {"sha256": digest[7:]}, "name": f"{registry.host}/{repo}"}]


def test_cosign_format_appends_to_the_att_tag_and_verifies(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    repo = repository()
    digest = registry.push_image(repo)
    image = f"{registry.host}/{repo}@{digest}"
    private, public = key_files["ecdsa-p256"]
    for run in ("first", "second"):
        code, out, err = generate(
            acr, private, tmp_path / run, "--image", image, "--attach", "--attach-format", "cosign"
        )
        assert code == 0, err
        assert f"attached:  {registry.host}/{repo}:sha256-{digest[7:]}.att" in out
    att = json.loads(registry.get(repo, f"manifests/sha256-{digest[7:]}.att", OCI_MANIFEST).content)
    envelopes = [
        (tmp_path / run / "provenance.intoto.jsonl").read_bytes().rstrip(b"\n") for run in ("first", "second")
    ]
    assert [layer["digest"] for layer in att["layers"]] == [_digest(e) for e in envelopes]
    assert att["layers"][0]["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert att["layers"][0]["annotations"] == {
        "dev.cosignproject.cosign/signature": "",
        "predicateType": PREDICATE,
    }
    config = json.loads(registry.get(repo, f"blobs/{att['config']['digest']}").content)
    assert config["rootfs"]["diff_ids"] == [_digest(e) for e in envelopes]
    assert registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).status_code == 404

    code, out, err = verify(acr, public, image)
    assert code == 0, out + err
    assert f"PASSED: {image} (cosign .att layer {_digest(envelopes[0])}" in out


def test_tampered_bundles_and_other_images_attestations_are_refused(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    repo = repository()
    first, second = registry.push_image(repo, "a"), registry.push_image(repo, "b")
    private, public = key_files["ecdsa-p256"]
    code, _, err = generate(acr, private, tmp_path / "out", "--image", f"{registry.host}/{repo}@{first}")
    assert code == 0, err
    bundle = (tmp_path / "out" / "provenance.sigstore.json").read_bytes()
    document = json.loads(bundle)
    payload = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    payload["subject"][0]["digest"]["sha256"] = second[7:]
    document["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    tampered = json.dumps(document).encode()

    size = len(registry.get(repo, f"manifests/{second}").content)
    entries = []
    for blob in (bundle, tampered):  # another image's valid bundle, then a tampered one claiming this image
        registry.push_blob(repo, b"{}")
        registry.push_blob(repo, blob)
        manifest = expected_referrer(second, size, blob)
        registry.put_manifest(repo, _digest(manifest), manifest, OCI_MANIFEST)
        entries.append(expected_entry(manifest))
    index = json.dumps({"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": entries}).encode()
    registry.put_manifest(repo, f"sha256-{second[7:]}", index, OCI_INDEX)

    code, out, _ = verify(acr, public, f"{registry.host}/{repo}@{second}")
    assert code == 1
    failed = [line for line in out.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 2
    name = f"{registry.host}/{repo}"
    assert (
        f"referrer {entries[0]['digest']}: (9) subject: {name} sha256 got {second[7:]}, expected {first[7:]}"
        in failed[0]
    )
    assert f"referrer {entries[1]['digest']}: (2) signature" in failed[1]
    assert "PASSED" not in out


def test_a_pull_only_identity_cannot_attach_and_is_told_to_get_acrpush(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    registry.tokens.identity_actions["sp"] = {"pull"}
    repo, digest, (code, out, err) = attach_new_image(acr, registry, key_files["ecdsa-p256"][0], tmp_path)
    assert code == 1
    assert f"refused to let these credentials push to {registry.host}/{repo}" in err
    assert "AcrPush role" in err
    assert registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).status_code == 404
    assert not (tmp_path / "out").exists(), "a failed push must leave no provenance behind"
    exchange = registry.tokens.exchanges[-1]
    assert (
        exchange["tenant"]
        == acr.env["ENDPOINT_AUTH_PARAMETER_" + acr.env["INPUT_AZURESUBSCRIPTION"].upper() + "_TENANTID"]
    )
    assert f"##vso[task.setsecret]{exchange['access_token']}" in out  # masked before any other use


def docker_login_to(registry: DockerRegistry, tmp_path: Path) -> tuple[str, str, Path]:
    """A new image, and a docker config folder logging in to its registry as builder / s3cret-password."""
    repo = repository()
    digest = registry.push_image(repo)
    registry.tokens.logins["builder"] = "s3cret-password"
    config = tmp_path / "docker"
    config.mkdir()
    login = base64.b64encode(b"builder:s3cret-password").decode()
    (config / "config.json").write_text(json.dumps({"auths": {f"https://{registry.host}": {"auth": login}}}))
    return repo, digest, config


def test_docker_login_and_credential_helper_authenticate_without_a_service_connection(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    repo, digest, config = docker_login_to(registry, tmp_path)
    env = {k: v for k, v in acr.env.items() if k != "INPUT_AZURESUBSCRIPTION"}
    image = f"{registry.host}/{repo}@{digest}"
    base = ["generate", "--signer", f"file:{key_files['ecdsa-p256'][0]}", "--image", image, "--attach"]
    run = run_cli(*base, "--output-dir", tmp_path / "a", env={**env, "DOCKER_CONFIG": str(config)})
    assert run.returncode == 0, run.stderr
    assert "s3cret-password" not in run.stdout.replace("##vso[task.setsecret]s3cret-password", "")

    helper = tmp_path / "bin" / "docker-credential-fake"
    helper.parent.mkdir()
    helper.write_text(
        '#!/bin/sh\nread host\n[ "$host" = "' + registry.host + '" ] || exit 1\n'
        'echo \'{"ServerURL":"\'$host\'","Username":"builder","Secret":"s3cret-password"}\'\n'
    )
    helper.chmod(0o755)
    (config / "config.json").write_text(json.dumps({"credHelpers": {registry.host: "fake"}}))
    path = f"{helper.parent}{os.pathsep}{os.environ['PATH']}"
    run = run_cli(
        *base, "--output-dir", tmp_path / "b", env={**env, "DOCKER_CONFIG": str(config), "PATH": path}
    )
    assert run.returncode == 0, run.stderr
    manifests = json.loads(registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).content)[
        "manifests"
    ]
    assert len(manifests) == 2

    registry.tokens.refresh_tokens["identity-token-of-a-docker-login"] = "sp"  # `az acr login` writes these
    identity = {"auths": {registry.host: {"identitytoken": "identity-token-of-a-docker-login"}}}
    (config / "config.json").write_text(json.dumps(identity))
    run = run_cli(*base, "--output-dir", tmp_path / "c", env={**env, "DOCKER_CONFIG": str(config)})
    assert run.returncode == 0, run.stderr
    manifests = json.loads(registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).content)[
        "manifests"
    ]
    assert len(manifests) == 3

    run = run_cli(*base, "--output-dir", tmp_path / "d", env={**env, "DOCKER_CONFIG": str(tmp_path / "none")})
    assert run.returncode == 1
    assert "refused to let these credentials read" in run.stderr and "AcrPull" in run.stderr


def test_registry_round_trips_are_counted(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    _, _, (code, out, err) = attach_new_image(acr, registry, key_files["ecdsa-p256"][0], tmp_path)
    assert code == 0, err
    resolving, attaching = registry_requests(out)
    # resolve: GET, its 401 answered by the exchange and the token request, GET again; attach without a
    # referrers API: empty blob HEAD/POST/PUT, bundle POST/PUT, manifest PUT, referrers GET, tag GET/PUT/GET
    assert (resolving, attaching) == (4, 10), out


def test_the_step_attests_and_attaches_images_alone_then_verifies_them(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slsa_provenance import step

    repo = repository()
    digest = registry.push_image(repo, "v2")
    staging = tmp_path / "staging"
    staging.mkdir()
    private, public = key_files["ecdsa-p256"]
    inputs = {
        "command": "generate",
        "dropFolder": str(staging),
        "signingMethod": "localKey",
        "localKeyFile": str(private),
        "images": f"{registry.host}/{repo}:v2\n",
        "attachToImages": "true",
        "attachFormat": "both",
    }
    assert step.main({**step_env(tmp_path / "job", **inputs), **acr.env}) == 0
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]" in out, out
    assert "holds no files: attesting the images alone" in out
    variable = next(line for line in out.splitlines() if "variable=attachedReferrers" in line)
    assert f"{registry.host}/{repo}@sha256:" in variable and f":sha256-{digest[7:]}.att" in variable
    assert (staging / "_manifest" / "slsa_1.0" / "provenance.sigstore.json").is_file()
    _, summary = attached(out)
    assert summary["subjects"]["listed"] == [{"name": f"{registry.host}/{repo}", "sha256": digest[7:]}]
    [image] = summary["images"]
    assert (image["name"], image["digest"]) == (f"{registry.host}/{repo}", digest)
    [referrer] = image["referrers"]
    assert referrer["digest"] in variable and referrer["cosignTag"] == f"sha256-{digest[7:]}.att"

    verify_inputs = {
        "command": "verify",
        "verifyImages": f"{registry.host}/{repo}@{digest}",
        "trustedKeys": str(public),
        "expectedRef": "refs/heads/main",
    }
    assert step.main({**step_env(tmp_path / "job", **verify_inputs), **acr.env}) == 0
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]all 1 images verified" in out, out
    assert f"PASSED: {registry.host}/{repo}@{digest} (referrer sha256:" in out
    _, summary = attached(out)
    assert summary["verdict"] == "PASSED" and summary["images"][0]["passed"] is True
    image_check = next(c for c in summary["checks"] if c["number"] == 9)
    assert (image_check["status"], image_check["got"]) == ("passed", "1 of 1 image digests are subjects")

    verify_inputs["expectedRef"] = "refs/tags/*"
    step.main({**step_env(tmp_path / "job", **verify_inputs), **acr.env})
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Failed]1 of 1 images failed verification" in out
    assert "(7) ref: workflow.ref: got 'refs/heads/main', expected 'refs/tags/*'" in out
    _, summary = attached(out)
    ref = next(c for c in summary["checks"] if c["number"] == 7)
    assert (summary["verdict"], ref["status"], ref["got"]) == ("FAILED", "failed", "refs/heads/main")
    assert summary["images"][0]["attestations"][0]["error"].startswith("(7) ref: ")


@pytest.fixture
def proxy(registry: DockerRegistry, certificate_authority) -> Iterator[ReferrersProxy]:  # type: ignore[no-untyped-def]
    server = ReferrersProxy(certificate_authority, registry).start()
    yield server
    server.stop()


@pytest.mark.parametrize("oci_subject", [True, False], ids=["OCI-Subject", "referrers-ping"])
def test_a_registry_with_the_referrers_api_gets_no_tag_index(  # type: ignore[no-untyped-def]
    acr: AzureStack,
    registry: DockerRegistry,
    proxy: ReferrersProxy,
    key_files,
    tmp_path: Path,
    oci_subject: bool,
) -> None:
    proxy.oci_subject = oci_subject
    repo = repository()
    digest = registry.push_image(repo)
    image = f"{proxy.host}/{repo}@{digest}"
    private, public = key_files["ecdsa-p256"]
    code, out, err = generate(acr, private, tmp_path / "out", "--image", image, "--attach")
    assert code == 0, err
    assert "(and tag index" not in out
    assert registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).status_code == 404
    [entry] = proxy.referrers[(repo, digest)]
    assert f"attached:  {proxy.host}/{repo}@{entry['digest']}" in out
    # attach: empty blob HEAD, POST, PUT (the first time in this repository), bundle POST, PUT, manifest PUT,
    # and without OCI-Subject the referrers GET that confirms the API
    assert registry_requests(out) == (4, 6 if oci_subject else 7), out

    code, out, err = generate(acr, private, tmp_path / "again", "--image", image, "--attach")
    assert code == 0, err
    assert registry_requests(out)[1] == (4 if oci_subject else 5), out  # the empty blob is there now
    assert len(proxy.referrers[(repo, digest)]) == 2
    proxy.page_size = 1
    proxy.referrers[(repo, digest)].insert(0, {**proxy.referrers[(repo, digest)][0], "artifactType": "other"})

    from slsa_provenance.gate.checks import Expectations
    from slsa_provenance.gate.images import verify_images
    from slsa_provenance.registry.client import Registries
    from slsa_provenance.signing.keys import load_public_key

    key = load_public_key(public.read_bytes(), "key")
    verify_images(
        [image], [key], Expectations(source_ref="refs/heads/main"), AgentRun.from_environment(acr.env)
    )  # warm imports
    started = time.perf_counter()
    [report] = verify_images(
        [image], [key], Expectations(source_ref="refs/heads/main"), AgentRun.from_environment(acr.env)
    )
    elapsed = time.perf_counter() - started
    assert report.passed, report.lines()
    assert report.lines()[-1].startswith(f"PASSED: {proxy.host}/{repo}@{digest} (referrer ")
    with Registries(AgentRun.from_environment(acr.env)) as registries:
        from slsa_provenance.gate.images import verify_image
        from slsa_provenance.registry.reference import parse_reference

        report = verify_image(registries, parse_reference(image), [key], Expectations())
        # GET, 401 answered by exchange + token, GET, the referrers GET and its two next pages (one of
        # the three entries a page; the first is of another artifactType), referrer manifest GET, bundle GET
        assert registries.requests == 9
        assert report.passed
    print(f"verify by reference, in process, referrers API: {elapsed * 1000:.0f} ms")
    assert elapsed < 1.0


def test_the_tag_index_keeps_what_a_concurrent_writer_added_and_ours(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, proxy: ReferrersProxy, key_files, tmp_path: Path
) -> None:
    proxy.oci_subject = False
    proxy.routes = [r for r in proxy.routes if "referrers" not in r[1].pattern]  # no referrers API
    repo = repository()
    digest = registry.push_image(repo)
    image = f"{proxy.host}/{repo}@{digest}"
    private = key_files["ecdsa-p256"][0]
    code, _, err = generate(acr, private, tmp_path / "first", "--image", image, "--attach")
    assert code == 0, err
    tag = f"sha256-{digest[7:]}"
    [first] = json.loads(registry.get(repo, f"manifests/{tag}", OCI_INDEX).content)["manifests"]

    blob = b'{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","other":"writer"}'
    registry.push_blob(repo, b"{}")
    registry.push_blob(repo, blob)
    size = len(registry.get(repo, f"manifests/{digest}").content)
    other = expected_referrer(digest, size, blob)
    registry.put_manifest(repo, _digest(other), other, OCI_MANIFEST)

    def concurrent_writer(repository: str, reference: str) -> None:
        """Read [first] before our write, wrote [first, other] after it: ours is gone."""
        index = {"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": [first, expected_entry(other)]}
        registry.put_manifest(repository, reference, json.dumps(index).encode(), OCI_INDEX)

    proxy.after_tag_put = concurrent_writer
    code, out, err = generate(acr, private, tmp_path / "second", "--image", image, "--attach")
    assert code == 0, err
    assert proxy.after_tag_put is None  # the writer ran
    digests = [
        m["digest"]
        for m in json.loads(registry.get(repo, f"manifests/{tag}", OCI_INDEX).content)["manifests"]
    ]
    ours = out.split(f"attached:  {proxy.host}/{repo}@")[1].split()[0]
    assert digests == [first["digest"], _digest(other), ours]


def test_bad_image_references_fail_with_one_sentence(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    key = key_files["ecdsa-p256"][0]
    cases = [
        (
            ["--image", "app@sha256:" + "a" * 64],
            2,
            "image 'app@sha256:" + "a" * 64 + "' is not a full image reference",
        ),
        (["--image", f"{registry.host}/team/app"], 2, "names neither a tag nor a digest"),
        (
            ["--image", f"{registry.host}/team/absent:v1"],
            2,
            f"image {registry.host}/team/absent:v1 is not in its registry",
        ),
        (["--image", f"{registry.host}/team/app:v1"], 2, "with images alone there is no drop"),
        (["--drop", str(REPO / "docs"), "--attach"], 2, "attaching to images was asked for"),
        ([], 2, "no drop folder given"),
    ]
    for args, status, message in cases:
        output = [] if "no drop" in message else ["--output-dir", str(tmp_path / "out")]
        run = run_cli(
            "generate", "--signer", f"file:{key}", *output, *args, env={**acr.env, "HOME": str(tmp_path)}
        )
        assert run.returncode == status, (args, run.stderr)
        errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and message in errors[0], (args, run.stderr)
    assert not (tmp_path / "out").exists()


def test_a_policy_and_a_summary_apply_to_images(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from slsa_provenance import step
    from slsa_provenance.signing import dsse
    from slsa_provenance.signing.keys import load_public_key
    from slsa_provenance.signing.local import LocalSigner
    from test_interop import securesystemslib_verifies

    private, public = key_files["ecdsa-p256"]
    repo, digest, (code, _, err) = attach_new_image(acr, registry, private, tmp_path)
    assert code == 0, err
    image = f"{registry.host}/{repo}@{digest}"
    policy = tmp_path / "policy.yml"
    vsa = tmp_path / "vsa.intoto.jsonl"
    env = {**acr.env, "HOME": "/nonexistent"}
    summary = ["--vsa", vsa, "--vsa-signer", f"file:{key_files['ed25519'][0]}"]
    policy.write_text(f"trustedKeys: [{public}]\nrefs: ['refs/tags/v*']\n")
    refused = run_cli("verify", "--policy", policy, "--image", image, *summary, env=env)
    assert refused.returncode == 1 and not vsa.exists()
    assert "(7) ref: workflow.ref: got 'refs/heads/main', expected one of ['refs/tags/v*']" in refused.stdout
    policy.write_text(
        f"trustedKeys: [{public}]\nrefs: ['refs/heads/main']\n"
        f"builders: [{{id: '**@refs/heads/main', level: 3, keys: [{public}]}}]\n"
    )
    passed = run_cli("verify", "--policy", policy, "--image", image, *summary, env=env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    envelope = dsse.Envelope.from_json(vsa.read_bytes())
    vsa_key = LocalSigner.from_file(str(key_files["ed25519"][0]))
    assert securesystemslib_verifies(
        envelope, load_public_key(key_files["ed25519"][1].read_bytes(), "vsa"), vsa_key.keyid
    )
    predicate = json.loads(envelope.payload)["predicate"]
    assert json.loads(envelope.payload)["subject"] == [
        {"name": f"{registry.host}/{repo}", "digest": {"sha256": digest.removeprefix("sha256:")}}
    ]
    assert predicate["verifiedLevels"] == ["SLSA_BUILD_LEVEL_3"]
    assert predicate["policy"]["uri"] == policy.resolve().as_uri()  # its digest: test_vsa.py
    [attestation] = predicate["inputAttestations"]
    assert attestation["name"].startswith(f"{registry.host}/{repo} referrer sha256:")

    vsa.unlink()
    inputs = {
        "command": "verify",
        "verifyImages": image,
        "policyFile": str(policy),
        "vsaFile": str(vsa),
        "vsaSigner": f"file:{key_files['ed25519'][0]}",
    }
    step.main({**step_env(tmp_path / "job", **inputs), **env})
    out = capsys.readouterr().out
    assert "##vso[task.complete result=Succeeded]all 1 images verified" in out, out
    assert f"##vso[task.setvariable variable=vsaPath]{vsa}" in out and vsa.is_file()
    _, summary = attached(out)
    assert summary["vsa"] == {"path": str(vsa), "sha256": hashlib.sha256(vsa.read_bytes()).hexdigest()}
    assert summary["policy"]["path"] == str(policy) and summary["level"] >= 1


def test_a_tag_answered_with_another_images_digest_is_refused(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, proxy: ReferrersProxy, key_files, tmp_path: Path
) -> None:
    """Red team: the registry claimed (Docker-Content-Digest) that the tag names an attested image while
    serving another; the gate took the header's word and PASSED the tag. It now hashes the manifest."""
    repo = repository()
    attested, evil = registry.push_image(repo, "good"), registry.push_image(repo, "evil")
    private, public = key_files["ecdsa-p256"]
    code, _, err = generate(
        acr, private, tmp_path / "out", "--image", f"{proxy.host}/{repo}@{attested}", "--attach"
    )
    assert code == 0, err

    def lie(request: Request) -> tuple[int, dict[str, str], bytes]:
        status, headers, body = proxy._forward(request)
        return status, {**headers, "Docker-Content-Digest": attested}, body

    override(proxy, "/manifests/evil", lie, ("GET", "HEAD"))
    code, out, _ = verify(acr, public, f"{proxy.host}/{repo}:evil")
    assert code == 1, out
    assert f"resolved {proxy.host}/{repo}:evil to {evil}" in out
    assert "PASSED" not in out


def test_a_host_redirected_to_gets_no_credentials(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, proxy: ReferrersProxy, certificate_authority, key_files
) -> None:
    """Red team: the registry redirected a request to another host, which answered 401 with a challenge
    of its own; the client traded the service connection's Entra token at that host's realm."""
    elsewhere = HttpsServer(certificate_authority).start()
    realm = f'Bearer realm="{elsewhere.url}/oauth2/token",service="elsewhere"'
    for method in ("GET", "POST"):
        elsewhere.route(method, r"/.*", lambda request: (401, {"WWW-Authenticate": realm}, b""))
    override(proxy, "/referrers/", lambda request: (307, {"Location": elsewhere.url + request.path}, b""))
    repo = repository()
    digest = registry.push_image(repo)
    try:
        code, out, err = verify(acr, key_files["ecdsa-p256"][1], f"{proxy.host}/{repo}@{digest}")
    finally:
        elsewhere.stop()
    assert code == 1, out
    assert [r.path for r in elsewhere.requests] == [f"/v2/{repo}/referrers/{digest}"]
    assert "authorization" not in elsewhere.requests[0].headers
    assert f"registry {proxy.host} refused to let these credentials read" in err


def override(
    proxy: ReferrersProxy,
    path: str,
    answer: Callable[[Request], tuple[int, dict[str, str], bytes]],
    methods: tuple[str, ...] = ("GET",),
) -> None:
    """The proxy answers requests whose path holds `path` with `answer`, before any other route."""
    for method in methods:
        proxy.route(method, f"/v2/.+{re.escape(path)}.*", answer)
        proxy.routes.insert(0, proxy.routes.pop())


REGISTRY_ATTACKS = {
    "the referrers API lists another image's referrer": "subject: got 'sha256:",
    "a referrer manifest served with other content than its digest": "with digest sha256:",
    "a bundle served with other content than its digest": "does not match its digest",
    "a referrer manifest of 5 MiB": "answered more than 4194304 bytes",
    "a bundle layer declaring 1 TiB": "is 1099511627776 bytes",
}


@pytest.mark.parametrize("attack", REGISTRY_ATTACKS)
def test_registry_attacks_on_verify_by_reference(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, proxy: ReferrersProxy, key_files, tmp_path: Path, attack: str
) -> None:
    """Red team: a registry that answers with what it should not; each is refused, naming the referrer."""
    repo = repository()
    image, other = registry.push_image(repo, "a"), registry.push_image(repo, "b")
    private, public = key_files["ecdsa-p256"]
    for digest in (image, other):
        out = tmp_path / digest[7:15]
        code, _, err = generate(acr, private, out, "--image", f"{proxy.host}/{repo}@{digest}", "--attach")
        assert code == 0, err
    [ours], [theirs] = proxy.referrers[(repo, image)], proxy.referrers[(repo, other)]
    manifest = registry.get(repo, f"manifests/{ours['digest']}", OCI_MANIFEST).content
    served = {"Content-Type": OCI_MANIFEST}
    if attack.startswith("the referrers API"):
        proxy.referrers[(repo, image)] = [theirs]
    elif attack.startswith("a referrer manifest served"):
        swapped = registry.get(repo, f"manifests/{theirs['digest']}", OCI_MANIFEST).content
        override(proxy, f"/manifests/{ours['digest']}", lambda request: (200, served, swapped))
    elif attack.startswith("a bundle served"):
        bundle = json.loads(manifest)["layers"][0]["digest"]
        override(proxy, f"/blobs/{bundle}", lambda request: (200, {}, b"{}"))
    elif "5 MiB" in attack:
        override(proxy, f"/manifests/{ours['digest']}", lambda request: (200, served, b" " * (5 << 20)))
    else:
        document = json.loads(manifest)
        document["layers"][0]["size"] = 1 << 40
        huge = json.dumps(document).encode()
        proxy.referrers[(repo, image)] = [{**ours, "digest": _digest(huge), "size": len(huge)}]
        override(proxy, f"/manifests/{_digest(huge)}", lambda request: (200, served, huge))
    code, out, _ = verify(acr, public, f"{proxy.host}/{repo}@{image}")
    assert code == 1, out
    assert "PASSED" not in out
    assert REGISTRY_ATTACKS[attack] in out, out


def test_a_busy_or_flaky_registry_is_retried_and_a_dead_one_named(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, proxy: ReferrersProxy, key_files, tmp_path: Path
) -> None:
    from fakes import Fault

    repo = repository()
    digest = registry.push_image(repo)
    image = f"{proxy.host}/{repo}@{digest}"
    proxy.oci_subject = False  # so the referrers GET is sent
    proxy.inject(r"/manifests/sha256:", Fault("status", response=(503, {"Retry-After": "0"}, b"busy")))
    proxy.inject(r"/referrers/", Fault("reset"))
    code, out, err = generate(acr, key_files["ecdsa-p256"][0], tmp_path / "out", "--image", image, "--attach")
    assert code == 0, err
    assert proxy.faults == []  # both were hit, and retried
    assert registry_requests(out)[0] == 5  # the GET answered 503 was sent again

    proxy.inject(r"/manifests/", Fault("status", response=(503, {"Retry-After": "0"}, b"busy")), times=10)
    code, _, err = generate(acr, key_files["ecdsa-p256"][0], tmp_path / "again", "--image", image)
    assert code == 1
    assert f"registry {proxy.host} answered 503 for the manifest {digest} of {proxy.host}/{repo}" in err


def test_the_image_demo_runs(
    registry: DockerRegistry,
) -> None:  # registry: skips where docker-registry is absent
    """`make demo-image`, so that a change to the gate cannot leave it broken unnoticed."""
    import subprocess
    import sys

    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    run = subprocess.run(
        ["bash", str(REPO / "demo" / "image.sh")],
        env={"PATH": path, "HOME": os.environ.get("HOME", "/nonexistent")},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Done: an image attested" in run.stdout
    assert run.stdout.count("PASSED: ") == 1 and "no attestation found" in run.stdout


def test_a_redirect_to_plain_http_is_refused(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, proxy: ReferrersProxy, key_files
) -> None:
    """Red team: a registry's redirect to http:// was followed and the answer used (anyone on the path
    could have written it). Now the request fails, and nothing of that answer is read."""
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}).encode()

    class Plain(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", OCI_INDEX)
            self.send_header("Content-Length", str(len(index)))
            self.end_headers()
            self.wfile.write(index)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    plain = f"http://127.0.0.1:{server.server_address[1]}"
    override(proxy, "/referrers/", lambda request: (307, {"Location": plain + request.path}, b""))
    repo = repository()
    digest = registry.push_image(repo)
    try:
        code, out, err = verify(acr, key_files["ecdsa-p256"][1], f"{proxy.host}/{repo}@{digest}")
    finally:
        server.shutdown()
        server.server_close()
    assert code == 1, out
    assert f"redirected to the plain-HTTP URL {plain}/v2/{repo}/referrers/{digest}" in err, err


@pytest.mark.parametrize(
    ("where", "agent"),
    [
        ("a shell", {}),
        ("a shell with TF_BUILD=True", {"TF_BUILD": "True"}),
        (
            "an agent",
            {"TF_BUILD": "True", "ENDPOINT_URL_SYSTEMVSSCONNECTION": "https://dev.azure.com/contoso/"},
        ),
    ],
    ids=["shell", "TF_BUILD alone", "agent"],
)
def test_a_docker_password_is_masked_under_an_agent_and_printed_nowhere_else(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path, where: str, agent: dict[str, str]
) -> None:
    """`task.setsecret` makes the agent mask a value; printed anywhere else it only shows the password.
    TF_BUILD alone (which any shell or other CI may set) is not an agent."""
    repo, digest, config = docker_login_to(registry, tmp_path)
    unset = {"TF_BUILD", "ENDPOINT_URL_SYSTEMVSSCONNECTION", "INPUT_AZURESUBSCRIPTION"}
    env = {**{k: v for k, v in acr.env.items() if k not in unset}, **agent, "DOCKER_CONFIG": str(config)}
    image = f"{registry.host}/{repo}@{digest}"
    signer = f"file:{key_files['ecdsa-p256'][0]}"
    args = ["--image", image, "--attach", "--pipeline-file", "ci.yml", "--no-server-confirmation"]
    run = run_cli("generate", "--signer", signer, *args, "--output-dir", tmp_path / "o", env=env)
    assert run.returncode == 0, run.stderr
    masked = "##vso[task.setsecret]s3cret-password"
    assert (masked in run.stdout.splitlines()) == (where == "an agent"), run.stdout
    assert "s3cret-password" not in run.stdout.replace(masked, "") + run.stderr


def test_the_packaged_step_uses_the_docker_login_docker_at_2_left_for_the_job(  # type: ignore[no-untyped-def]
    extension: Path, acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    """Docker@2's login sets the job variable DOCKER_CONFIG for the steps after it: the packaged
    step, which hands Python only the variables it names, must hand this one on too."""
    from agent import AgentJob

    repo, digest, config = docker_login_to(registry, tmp_path)
    job = AgentJob(
        tmp_path / "agent",
        variables={"DOCKER_CONFIG": str(config)},
        process={**acr.process, "PATH": os.environ["PATH"]},
    )
    inputs = {
        "command": "generate",
        "signingMethod": "localKey",
        "localKeyFile": str(key_files["ecdsa-p256"][0]),
        "images": f"{registry.host}/{repo}@{digest}",
        "attachToImages": "true",
        "confirmWithServer": "false",
        "pipelineFile": "ci.yml",
    }
    result = job.run(extension / "SlsaProvenanceV1", inputs, offline=False)
    assert result.result == "Succeeded", result.stdout + result.stderr
    assert "s3cret-password" in result.secrets
    assert registry.get(repo, f"manifests/sha256-{digest[7:]}", OCI_INDEX).status_code == 200


def test_a_drop_file_named_like_the_image_attested_beside_it_is_refused(  # type: ignore[no-untyped-def]
    acr: AzureStack, registry: DockerRegistry, key_files, tmp_path: Path
) -> None:
    """Two subjects of one name: a gate would read the file's digest as the image's or the other way
    round, and could not tell which of them a folder must hold."""
    repo = repository()
    digest = registry.push_image(repo)
    drop = tmp_path / "drop"
    (drop / registry.host / repo).parent.mkdir(parents=True)
    (drop / registry.host / repo).write_bytes(b"not the image\n")
    private = key_files["ecdsa-p256"][0]
    image = f"{registry.host}/{repo}@{digest}"
    code, _, err = generate(acr, private, tmp_path / "out", "--drop", str(drop), "--image", image)
    assert code == 2, err
    assert f"the drop's file {registry.host}/{repo} has the name of an image attested with it" in err
    assert not (tmp_path / "out").exists()
