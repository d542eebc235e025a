"""Free TCP ports on 127.0.0.1.

Envoy takes its ports from a config file, so we cannot hand it port 0: we ask the kernel
for a free port, close the socket and pass the number on. The window between closing and
Envoy binding is tiny and only matters if another process grabs that exact port.
"""

from __future__ import annotations

import socket

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]

