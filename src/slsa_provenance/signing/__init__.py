"""DSSE envelopes and Sigstore bundles, signed by a local key or an Azure Key Vault key."""

KEY_TYPES = ("ecdsa-p256", "ecdsa-p384", "rsa-3072", "ed25519")
"""What `keygen --type` makes (local.py); named here so that the CLI lists them without importing
cryptography."""
