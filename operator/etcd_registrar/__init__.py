"""etcd-registrar: keeps an etcd service registry in step with Kubernetes pod readiness."""

GROUP = "etcd-registrar.io"
VERSION = "v1alpha1"
PLURAL = "serviceregistrations"
KIND = "ServiceRegistration"

ANNOTATION_SERVICE = f"{GROUP}/service"
ANNOTATION_PORT = f"{GROUP}/port"
ANNOTATION_METADATA = f"{GROUP}/metadata"
