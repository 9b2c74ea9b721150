"""DSSE envelopes and Sigstore bundles, signed by a local key or an Azure Key Vault key."""
