#!/usr/bin/env bash
# Container images offline: a local registry (Debian's docker-registry, TLS), an image pushed to it,
# provenance generated for it and attached as an OCI referrer, verified by image reference, and an
# image without provenance refused. Run it with `make demo-image`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if ! command -v docker-registry >/dev/null; then
  echo "this demo needs Debian's docker-registry: apt-get install docker-registry" >&2
  exit 2
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/slsa-image-demo.XXXXXX")
trap 'kill "$(cat "$work/registry/pid" 2>/dev/null)" 2>/dev/null || true; rm -rf "$work"' EXIT
cd "$work"
mkdir registry

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

say "1. A registry on 127.0.0.1 (HTTPS with a CA made for this demo), and the build pushes web:1.4.2"
host=$(python "$here/registry.py" start registry)
export REQUESTS_CA_BUNDLE=$work/registry/ca.pem
digest=$(python "$here/registry.py" push registry "$host" contoso/web 1.4.2)
echo "pushed $host/contoso/web:1.4.2 as $digest"
source "$here/agent-env.sh"

say "2. Generate provenance for the image by its tag (resolved to the digest) and attach it"
run slsa-provenance keygen --out keys
run slsa-provenance generate --signer file:keys/slsa-signing.key --pipeline-file azure-pipelines.yml \
    --image "$host/contoso/web:1.4.2" --attach --output-dir out

say "3. What the registry now holds (this registry has no referrers API: the tag index is written too)"
python "$here/registry.py" show registry "$host" contoso/web "$digest"

say "4. A deployment gate verifies the image by reference"
run slsa-provenance verify --key keys/slsa-signing.pub --image "$host/contoso/web@$digest" \
    --source-ref 'refs/heads/main' \
    --allow-unconfirmed  # outside a pipeline nothing confirmed the run; a real gate leaves this off

say "5. Another image, pushed without provenance, is refused"
other=$(python "$here/registry.py" push registry "$host" contoso/web 1.4.3-hotfix)
if run slsa-provenance verify --key keys/slsa-signing.pub --image "$host/contoso/web@$other" \
    --allow-unconfirmed; then
  echo "an image without provenance was accepted: this must not happen" >&2
  exit 1
fi
echo
echo "Done: an image attested, its provenance attached in the registry, verified by reference."
