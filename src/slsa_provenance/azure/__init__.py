"""The platform's edges: Azure DevOps REST, Entra credentials, the agent's HTTP settings, ##vso output."""
