#!/usr/bin/env bash
# The whole flow offline: a build's drop, a key, signed provenance beside the SBOM, a deployment gate
# that passes, and the same gate refusing a tampered binary. Run it with `make demo`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/slsa-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

say "1. A build of contoso/web has finished; this is its drop"
mkdir -p drop/bin drop/lib/plugins drop/docs
head -c 300000 /dev/urandom > drop/bin/web-server
head -c 120000 /dev/urandom > drop/bin/web-cli
head -c 40000 /dev/urandom > drop/lib/plugins/auth.so
printf 'contoso web 1.4.2\n' > drop/docs/README.txt
tar -czf drop/web-1.4.2-linux-x64.tar.gz -C drop bin
python "$here/../packaging/spdx.py" drop   # what sbom-tool writes into drop/_manifest/
(cd drop && find . -type f | sort)

say "2. The agent describes the run in its predefined variables (here set by hand)"
source "$here/agent-env.sh"
echo "build $BUILD_BUILDNUMBER of $BUILD_REPOSITORY_URI at $BUILD_SOURCEVERSION ($BUILD_SOURCEBRANCH)"
echo "(outside a pipeline nothing can confirm these with the server: the provenance will say so)"

say "3. A signing key (in a pipeline: an Azure Key Vault HSM key; here a local one)"
run slsa-provenance keygen --out keys

say "4. Generate and sign the provenance, beside the SBOM"
run slsa-provenance generate --drop drop --signer file:keys/slsa-signing.key \
    --pipeline-file azure-pipelines.yml
python - <<'PY'
import base64, json
envelope = json.loads(open("drop/_manifest/slsa_1.0/provenance.intoto.jsonl").read())
statement = json.loads(base64.b64decode(envelope["payload"]))
predicate = statement["predicate"]
print("\nwhat it says:")
for subject in statement["subject"]:
    print(f"  subject   {subject['name']:32} sha256:{subject['digest']['sha256'][:16]}...")
dependency = predicate["buildDefinition"]["resolvedDependencies"][0]
print(f"  source    {dependency['uri']} @ {dependency['digest']['gitCommit'][:12]}")
print(f"  builder   {predicate['runDetails']['builder']['id']}")
print(f"  run       {predicate['buildDefinition']['externalParameters']['build']['buildUrl']}")
for byproduct in predicate["runDetails"].get("byproducts", []):
    print(f"  sbom      {byproduct['name']} sha256:{byproduct['digest']['sha256'][:16]}...")
print(f"  signature {envelope['signatures'][0]['keyid']}")
PY

gate() {
  run slsa-provenance verify --provenance drop/_manifest/slsa_1.0/provenance.intoto.jsonl \
      --key keys/slsa-signing.pub --artifact drop \
      --source-uri https://dev.azure.com/contoso/web/_git/web --source-ref 'refs/heads/main' \
      --allow-unconfirmed  # outside a pipeline nothing confirmed the run; a real gate leaves this off
}

say "5. The deployment gate verifies every artifact before release"
gate

say "6. Someone swaps a binary after the build; the gate refuses to ship it"
printf 'backdoor' >> drop/bin/web-server
if gate; then
  echo "the tampered artifact was accepted: this must not happen" >&2
  exit 1
else
  echo "gate failed with exit code $?: the tampered web-server cannot ship"
fi

say "7. Regenerating the provenance does not launder it: the SBOM disagrees with the drop"
if run slsa-provenance generate --drop drop --signer file:keys/slsa-signing.key \
    --pipeline-file azure-pipelines.yml --output-dir relabelled; then
  echo "the tampered drop was attested: this must not happen" >&2
  exit 1
fi

say "8. Provenance signed by another key is refused too"
run slsa-provenance keygen --out other-keys
if run slsa-provenance verify --provenance drop/_manifest/slsa_1.0/provenance.intoto.jsonl \
    --key other-keys/slsa-signing.pub --artifact drop/docs/README.txt --allow-unconfirmed; then
  echo "an untrusted signature was accepted: this must not happen" >&2
  exit 1
fi
echo
echo "Done: provenance signed, verified, and tampering caught."
