"""The real node (hack/realnode-up.sh): a kubelet with containerd and runc beside kwok's fake
nodes, running locally built images, with pod addresses on a bridge this machine reaches."""

from __future__ import annotations

import copy
import ipaddress
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from tests.harness import CLUSTER_DIR, deployment_manifest, run_hack_script

NODE_ENV = CLUSTER_DIR / "realnode" / "node.env"
DEMO_PORT = 8080  # tests/images/demo/app.py


@dataclass(frozen=True)
class RealNode:
    """What hack/realnode-up.sh wrote to .cluster/realnode/node.env."""

    name: str
    label: str  # "key=value", selects the node
    taint_key: str
    pod_subnet: ipaddress.IPv4Network
    registry_etcd_for_pods: str  # the registry etcd as pods reach it
    operator_image: str
    demo_image: str

    @classmethod
    def ensure_up(cls, timeout: float = 540.0) -> RealNode:
        """Start (or reuse) the real node; the first run builds its images (minutes)."""
        run_hack_script("realnode-up.sh", timeout)
        env = dict(line.split("=", 1) for line in NODE_ENV.read_text().splitlines() if "=" in line)
        return cls(
            name=env["NODE_NAME"],
            label=env["NODE_LABEL"],
            taint_key=env["TAINT_KEY"],
            pod_subnet=ipaddress.IPv4Network(env["POD_SUBNET"]),
            registry_etcd_for_pods=env["REGISTRY_ETCD_FOR_PODS"],
            operator_image=env["OPERATOR_IMAGE"],
            demo_image=env["DEMO_IMAGE"],
        )

    def placement(self) -> dict[str, Any]:
        """Pod spec fields that put a pod on this node (it is tainted against all others)."""
        key, value = self.label.split("=", 1)
        return {
            "nodeSelector": {key: value},
            "tolerations": [{"key": self.taint_key, "operator": "Exists", "effect": "NoSchedule"}],
        }

    def demo_deployment(
        self, name: str, replicas: int, annotations: dict[str, str], **pod: Any
    ) -> dict[str, Any]:
        """A Deployment of the demo app on this node, ready by its HTTP readiness probe (checked
        every second by the kubelet) and admitted by Pod Security "restricted"; `pod` adds or
        replaces pod spec fields."""
        manifest = copy.deepcopy(
            deployment_manifest(
                name, replicas, image=self.demo_image, port=DEMO_PORT, annotations=annotations
            )
        )
        spec = manifest["spec"]["template"]["spec"]
        spec.update(
            self.placement(),
            securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
            **pod,
        )
        spec["containers"][0] |= {
            "imagePullPolicy": "Never",
            "securityContext": {
                "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]},
            },
            "readinessProbe": {
                "httpGet": {"path": "/ready", "port": "http"},
                "periodSeconds": 1,
                "failureThreshold": 1,
            },
        }
        return manifest


def demo_request(ip: str, path: str, method: str = "GET") -> int:
    """One HTTP request to a demo pod, straight to its address on the bridge: the status, or
    0 when nothing answers."""
    request = urllib.request.Request(f"http://{ip}:{DEMO_PORT}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=1) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0
