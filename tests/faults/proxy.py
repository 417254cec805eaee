"""A slow, lossy link between the operator and etcd (issue #22): a TCP relay on loopback
that delays what it forwards and drops every connection on demand."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class SlowLink:
    """Relays 127.0.0.1:`url`'s port to 127.0.0.1:`port`, each chunk `delay` seconds late
    in both directions; `drop` cuts every connection open now (mid-transaction, if one is
    in flight), and the client connects again."""

    def __init__(self, port: int) -> None:
        self.delay = 0.0
        self._port = port
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True, name="slow-link").start()

    def drop(self) -> None:
        with self._lock:
            socks, self._socks = self._socks, set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()
        self.drop()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self._port))
            except OSError:  # closed, or etcd is down: the client retries
                with contextlib.suppress(NameError):
                    conn.close()
                if self._listener.fileno() < 0:
                    return
                continue
            with self._lock:
                self._socks |= {conn, upstream}
            for source, sink in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if self.delay:
                    time.sleep(self.delay)
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            self._socks -= {source, sink}
