"""A TCP proxy for tests: forwards loopback connections to a server and counts the bytes in each direction."""

from __future__ import annotations

import selectors
import socket
import threading


class CountingProxy:
    """Listen on 127.0.0.1 and forward every connection to ``(host, port)``, counting bytes.

    Attributes
    ----------
    to_client, to_server : int
        Bytes forwarded from the server to clients, and from clients to the server.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.to_client = 0
        self.to_server = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ)
        self._peers: dict[socket.socket, tuple[socket.socket, bool]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            for event, _ in self._selector.select(timeout=0.1):
                sock = event.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    client, _ = self._listener.accept()
                    upstream = socket.create_connection(self.target)
                    self._peers[client] = (upstream, True)
                    self._peers[upstream] = (client, False)
                    self._selector.register(client, selectors.EVENT_READ)
                    self._selector.register(upstream, selectors.EVENT_READ)
                    continue
                other, from_client = self._peers[sock]
                data = sock.recv(1 << 20)
                if not data:
                    self._drop(sock)
                    continue
                other.sendall(data)
                if from_client:
                    self.to_server += len(data)
                else:
                    self.to_client += len(data)

    def _drop(self, sock: socket.socket) -> None:
        other, _ = self._peers.pop(sock)
        self._peers.pop(other, None)
        for s in (sock, other):
            try:
                self._selector.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in list(self._peers):
            if sock in self._peers:
                self._drop(sock)
        self._selector.close()
        self._listener.close()
