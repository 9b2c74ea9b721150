"""SLSA v1.0 provenance for Azure Pipelines: generate, sign and verify.

    $ slsa-provenance keygen --out keys
    $ slsa-provenance generate --drop drop --signer file:keys/slsa-signing.key
    $ slsa-provenance verify --provenance drop/_manifest/slsa_1.0/provenance.intoto.jsonl \\
          --key keys/slsa-signing.pub --artifact drop
"""

__version__ = "1.0.0"
