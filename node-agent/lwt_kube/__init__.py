"""The one Kubernetes client of the project (agent, operator and tests): see client.py."""
from .client import ApiError, CredentialsError, Kube, api_path, load_configuration

__all__ = ["ApiError", "CredentialsError", "Kube", "api_path", "load_configuration"]
