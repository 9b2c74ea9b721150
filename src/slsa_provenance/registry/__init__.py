"""OCI registries: references, a distribution client, ACR and docker auth, attaching attestations."""
