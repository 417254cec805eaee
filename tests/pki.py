"""A throw-away certificate authority for tests, made with openssl."""

from __future__ import annotations

import ipaddress
import subprocess
from pathlib import Path


class Pki:
    """A CA and the certificates it issues, in one directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.ca = self.new_ca("ca")

    def _run(self, *args: str) -> None:
        subprocess.run(["openssl", *args], cwd=self.dir, check=True, capture_output=True)

    def new_ca(self, name: str) -> Path:
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "1",
                  "-subj", f"/CN={name}")  # fmt: skip
        return self.dir / f"{name}.crt"

    def issue(self, name: str, cn: str, *, server: str | None = None, ca: str = "ca") -> Path:
        """`name`.crt and `name`.key: a client certificate for `cn`, or with `server` (an IP
        address or a DNS name, its only subject alternative name) a server's too."""
        extensions = f"subjectAltName={san(server)}\n" if server else ""
        extensions += f"extendedKeyUsage={'serverAuth,clientAuth' if server else 'clientAuth'}\n"
        (self.dir / f"{name}.ext").write_text(extensions)
        self._run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                  "-keyout", f"{name}.key", "-out", f"{name}.csr",
                  "-subj", f"/CN={cn}")  # fmt: skip
        self._run("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
                  "-CAcreateserial", "-out", f"{name}.crt", "-days", "1",
                  "-extfile", f"{name}.ext")  # fmt: skip
        return self.dir / f"{name}.crt"


def san(host: str) -> str:
    """openssl's subjectAltName entry for an IP address or a DNS name."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return f"DNS:{host}"
    return f"IP:{host}"
