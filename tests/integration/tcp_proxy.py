"""A TCP proxy in front of RabbitMQ that a test can kill, restart or freeze.

``rabbitmqctl stop_app`` closes connections politely (an AMQP connection.close). A crashed or killed
server, or a cut cable, does not: the socket is reset, or just goes silent. This proxy produces those
faults without touching the shared RabbitMQ: ``kill()`` resets every connection and refuses new ones
until ``start()``; ``freeze()`` keeps the sockets open but forwards nothing until ``thaw()``;
``hold_replies()`` forwards what clients send but none of the server's answers until ``release_replies()``
(a command that ran but whose reply is lost when the connection is killed meanwhile).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading

from tests.ports import free_ports


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = free_ports()  # kill() and start() bind it again: never a source port
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._running = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._replies = threading.Event()
        self._replies.set()
        self.connections = 0

    def url(self, amqp_url: str) -> str:
        """``amqp_url`` pointed at this proxy instead of the broker."""
        scheme, rest = amqp_url.split("://", 1)
        credentials, _, hostpath = rest.rpartition("@")
        path = hostpath.split("/", 1)[1] if "/" in hostpath else ""
        return f"{scheme}://{credentials}@127.0.0.1:{self.port}/{path}"

    def start(self) -> None:
        if self._running.is_set():
            raise RuntimeError("the proxy is already running")
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        self._running.set()
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._acceptor.start()

    def kill(self) -> None:
        """Reset every connection (as a killed server's kernel does) and refuse new ones.

        Deterministic: once this returns, no socket of the proxy is open on its port, including one
        the accept thread took while this ran (it sees ``_running`` cleared under the lock and resets it).
        The listener is shut down before it is closed: a close alone does not stop a socket on which
        another thread is blocked in accept(), so it went on listening (and queueing connections that
        kept the port busy) until the next connection arrived.
        """
        with self._lock:
            self._running.clear()
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
            acceptor, self._acceptor = self._acceptor, None
        if listener is not None:
            # close() alone leaves a thread blocked in accept() holding the socket in LISTEN (and the
            # port bound) until the next connection attempt; shutdown wakes accept() and frees the port.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if acceptor is not None and acceptor is not threading.current_thread():
            acceptor.join(10)
        for sock in sockets:
            _reset(sock)

    def freeze(self) -> None:
        """Stop forwarding bytes, keeping every socket open: a silent network."""
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def hold_replies(self) -> None:
        """Forward requests to the server, but keep its replies back (they wait in the socket)."""
        self._replies.clear()

    def release_replies(self) -> None:
        self._replies.set()

    def _accept(self, listener: socket.socket) -> None:
        while self._running.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                alive = self._running.is_set()
                if alive:
                    self._sockets.update((client, upstream))
                    self.connections += 1
            if not alive:  # accepted while kill() ran: reset it as kill() did the others
                _reset(client)
                _reset(upstream)
                return
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        pair = {client: upstream, upstream: client}
        try:
            while True:
                self._flowing.wait()
                watched = list(pair) if self._replies.is_set() else [client]
                readable, _, _ = select.select(watched, [], [], 0.2)
                if not self._flowing.is_set():
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    pair[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._sockets.difference_update(pair)


def _reset(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0): no TIME_WAIT is left holding the proxy's port."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()
