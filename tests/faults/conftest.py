"""The operator's faults run on the local cluster, with the e2e tests' fixtures."""

from tests.e2e.conftest import crd

__all__ = ["crd"]
