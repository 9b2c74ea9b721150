"""Image references, Docker@2's output file and the tag index merge, without a registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slsa_provenance.azure.agent import AgentRun
from slsa_provenance.errors import Error, InputError
from slsa_provenance.registry.attach import index_entry, merged_index, referrer_manifest
from slsa_provenance.registry.client import OCI_INDEX, OCI_MANIFEST
from slsa_provenance.registry.images import image_references, references_in_docker_output
from slsa_provenance.registry.reference import Descriptor, ImageReference, parse_reference

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"myacr.azurecr.io/team/app@{DIGEST}", ImageReference("myacr.azurecr.io", "team/app", "", DIGEST)),
        ("myacr.azurecr.io/app:v1.2", ImageReference("myacr.azurecr.io", "app", "v1.2")),
        (f"127.0.0.1:5000/a/b/c:t@{DIGEST}", ImageReference("127.0.0.1:5000", "a/b/c", "t", DIGEST)),
        (f" docker://localhost/app@{DIGEST} ", ImageReference("localhost", "app", "", DIGEST)),
        ("docker.io/library/nginx:1", ImageReference("docker.io", "library/nginx", "1")),
    ],
)
def test_references_parse(text: str, expected: ImageReference) -> None:
    assert parse_reference(text) == expected


def test_docker_hub_is_reached_at_its_api_host() -> None:
    reference = parse_reference("docker.io/library/nginx:1")
    assert reference.host == "registry-1.docker.io" and reference.name == "docker.io/library/nginx"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nginx:1", "is not a full image reference"),
        (f"app@{DIGEST}", "is not a full image reference"),
        ("myacr.azurecr.io/App:v1", "is not a full image reference"),
        ("https://myacr.azurecr.io/app:v1", "is not a full image reference"),
        ("myacr.azurecr.io/app@sha256:abc", "is not a full image reference"),
        ("myacr.azurecr.io/app", "names neither a tag nor a digest"),
    ],
)
def test_bad_references_are_refused_with_the_form(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_reference(text)
    assert caught.value.remedy


DOCKER_PUSH = f"""The push refers to repository [myacr.azurecr.io/team/api]
5f70bf18a086: Preparing
5f70bf18a086: Pushed
1.0: digest: {DIGEST} size: 1570
latest: digest: {DIGEST} size: 1570
The push refers to repository [myacr.azurecr.io/team/web]
2.0: digest: {OTHER} size: 1782
"""


def test_docker_output_names_every_pushed_image_once() -> None:
    assert references_in_docker_output(DOCKER_PUSH) == [
        ImageReference("myacr.azurecr.io", "team/api", "", DIGEST),
        ImageReference("myacr.azurecr.io", "team/web", "", OTHER),
    ]


def test_docker_output_files_and_images_merge_without_repeats(tmp_path: Path) -> None:
    (tmp_path / "build.txt").write_text("Successfully built 1234\n")
    (tmp_path / "push.txt").write_text(DOCKER_PUSH)
    build_and_push = [tmp_path / "build.txt", tmp_path / "push.txt"]  # DockerOutput of buildAndPush
    found = image_references([f"myacr.azurecr.io/team/api@{DIGEST}"], build_and_push)
    assert [str(r) for r in found] == [
        f"myacr.azurecr.io/team/api@{DIGEST}",
        f"myacr.azurecr.io/team/web@{OTHER}",
    ]
    with pytest.raises(InputError, match="names no pushed image digest"):
        image_references([], [tmp_path / "build.txt"])
    with pytest.raises(InputError, match="cannot read docker output file"):
        image_references([], [tmp_path / "absent.txt"])


def test_the_tag_index_is_extended_never_rewritten() -> None:
    subject = Descriptor(OCI_MANIFEST, DIGEST, 400)
    manifest = referrer_manifest(
        subject, Descriptor("application/vnd.dev.sigstore.bundle.v0.3+json", OTHER, 900), "t"
    )
    entry = index_entry(Descriptor(OCI_MANIFEST, "sha256:" + "c" * 64, len(manifest)), "t")
    fresh = merged_index(None, [entry])
    assert fresh is not None
    assert json.loads(fresh) == {"mediaType": OCI_INDEX, "schemaVersion": 2, "manifests": [entry]}
    foreign = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 1, "x-unknown": [1]}
    existing = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [foreign], "annotations": {}}
    )
    merged = merged_index(existing.encode(), [entry])
    assert merged is not None
    assert json.loads(merged)["manifests"] == [foreign, entry]
    assert json.loads(merged)["annotations"] == {}
    assert merged_index(merged, [entry]) is None  # nothing missing: nothing to write
    with pytest.raises(Error, match="is not an image index"):
        merged_index(b'{"schemaVersion": 2, "layers": []}', [entry])


def test_token_services_must_use_https() -> None:
    from slsa_provenance.registry.auth import Challenge, RegistryCredentials

    def never(*args: object) -> object:
        raise AssertionError("no request may be sent to a plain-HTTP realm")

    challenge = Challenge.parse('Bearer realm="http://r.example/token",service="r.example"')
    assert challenge is not None
    with pytest.raises(Error, match="sends token requests to http://r.example/token") as caught:
        RegistryCredentials("r.example", AgentRun.from_environment({"HOME": "/nonexistent"})).answer(
            challenge, "repository:a:pull", never
        )
    assert caught.value.remedy == "token services must use HTTPS"


def test_docker_logins_are_read_as_the_docker_cli_reads_them(tmp_path: Path) -> None:
    import base64

    from slsa_provenance.registry.auth import Login, docker_login

    config = {
        "auths": {
            "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pw").decode()},
            "myacr.azurecr.io": {"identitytoken": "refresh-123"},
            "https://other.example/v2/": {"username": "u", "password": "p"},
        }
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    env = AgentRun.from_environment({"DOCKER_CONFIG": str(tmp_path)}).docker_config
    assert env == tmp_path
    assert docker_login("registry-1.docker.io", env) == Login("hub", "pw")
    assert docker_login("myacr.azurecr.io", env) == Login(identity_token="refresh-123")
    assert docker_login("other.example", env) == Login("u", "p")
    assert docker_login("unknown.example", env) is None
    assert docker_login("myacr.azurecr.io", tmp_path / "nobody" / ".docker") is None
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read the docker config"):
        docker_login("myacr.azurecr.io", env)


def test_in_a_pipeline_without_a_connection_acr_is_asked_anonymously(tmp_path: Path) -> None:
    """Never the agent machine's Azure identity: no Entra token is requested, the realm gets a plain GET."""
    from slsa_provenance.registry.auth import Challenge, RegistryCredentials
    from slsa_provenance.registry.reference import Response

    sent: list[tuple[str, str, dict[str, str]]] = []

    def send(method: str, url: str, headers: dict[str, str], *rest: object) -> Response:
        sent.append((method, url, headers))
        return Response(method, 200, {}, b'{"token": "anonymous-token"}')

    challenge = Challenge.parse(
        'Bearer realm="https://contoso.azurecr.io/oauth2/token",service="contoso.azurecr.io"'
    )
    assert challenge is not None
    credentials = RegistryCredentials(
        "contoso.azurecr.io", AgentRun.from_environment({"TF_BUILD": "True", "HOME": str(tmp_path)})
    )
    header = credentials.answer(challenge, "repository:web:pull", send)
    assert header == {"Authorization": "Bearer anonymous-token"}
    assert [(method, url) for method, url, _ in sent] == [
        (
            "GET",
            "https://contoso.azurecr.io/oauth2/token?service=contoso.azurecr.io&scope=repository%3Aweb%3Apull",
        )
    ]
    assert "Authorization" not in sent[0][2]
