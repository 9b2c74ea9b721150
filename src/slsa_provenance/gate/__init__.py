"""Deployment gates: the numbered checks, the policy, artifacts and images, the verification summary."""
