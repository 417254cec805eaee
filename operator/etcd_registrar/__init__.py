"""etcd-registrar: keeps an etcd service registry in step with Kubernetes pod readiness."""

from importlib import metadata

try:
    __version__ = metadata.version("etcd-registrar")
except metadata.PackageNotFoundError:  # running from a source tree without installing
    __version__ = "unknown"

GROUP = "etcd-registrar.io"
VERSION = "v1alpha1"
PLURAL = "serviceregistrations"
KIND = "ServiceRegistration"

ANNOTATION_SERVICE = f"{GROUP}/service"
ANNOTATION_PORT = f"{GROUP}/port"
ANNOTATION_METADATA = f"{GROUP}/metadata"
