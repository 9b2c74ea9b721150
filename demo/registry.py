"""A local registry for `make demo-image`: Debian's docker-registry on 127.0.0.1 with TLS from a CA made
here (no auth), and a small image pushed to it. Offline; everything lives in the folder given.

    python demo/registry.py start DIR     # prints the registry's host:port; the CA is DIR/ca.pem
    python demo/registry.py push DIR HOST REPO TAG
    python demo/registry.py show DIR HOST REPO DIGEST   # the referrers tag index and the referrer
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def _certificates(folder: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "demo registry")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    (folder / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def start(folder: Path) -> None:
    _certificates(folder)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "tls": {"certificate": str(folder / "ca.pem"), "key": str(folder / "key.pem")},
        },
    }
    (folder / "config.yml").write_text(json.dumps(config))
    log = (folder / "registry.log").open("wb")
    command = ["docker-registry", "serve", str(folder / "config.yml")]
    process = subprocess.Popen(command, stdout=log, stderr=log)  # noqa: S603  (a fixed program and our config)
    (folder / "pid").write_text(str(process.pid))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            print(f"127.0.0.1:{port}")
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"docker-registry did not start: {(folder / 'registry.log').read_text()}")


def _session(folder: Path) -> requests.Session:
    session = requests.Session()
    session.verify = str(folder / "ca.pem")
    return session


def _blob(session: requests.Session, base: str, data: bytes) -> dict[str, object]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    location = session.post(f"{base}/blobs/uploads/", timeout=10).headers["Location"]
    session.put(f"{location}&digest={digest}", data=data, timeout=10).raise_for_status()
    return {"digest": digest, "size": len(data)}


def push(folder: Path, host: str, repository: str, tag: str) -> None:
    session, base = _session(folder), f"https://{host}/v2/{repository}"
    layer = _blob(session, base, os.urandom(4096))
    config = _blob(
        session, base, json.dumps({"os": "linux", "rootfs": {"diff_ids": [layer["digest"]]}}).encode()
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer}],
        }
    ).encode()
    answer = session.put(
        f"{base}/manifests/{tag}", data=manifest, headers={"Content-Type": OCI_MANIFEST}, timeout=10
    )
    answer.raise_for_status()
    print(answer.headers["Docker-Content-Digest"])


def show(folder: Path, host: str, repository: str, digest: str) -> None:
    session, base = _session(folder), f"https://{host}/v2/{repository}"
    accept = {"Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"}
    index = session.get(f"{base}/manifests/sha256-{digest[7:]}", headers=accept, timeout=10).json()
    print(f"tag sha256-{digest[7:19]}… (the referrers tag index):")
    for entry in index["manifests"]:
        print(f"  {entry['digest']}  {entry['artifactType']}")
        referrer = session.get(f"{base}/manifests/{entry['digest']}", headers=accept, timeout=10).json()
        print(f"    subject {referrer['subject']['digest']}, layer {referrer['layers'][0]['mediaType']}")
        for name, value in referrer["annotations"].items():
            print(f"    {name}: {value}")


if __name__ == "__main__":
    command, folder, *rest = sys.argv[1:]
    {"start": start, "push": push, "show": show}[command](Path(folder), *rest)
