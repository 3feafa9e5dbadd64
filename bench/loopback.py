"""What bench/'s scripts share about the loopback they measure on."""

import socket


def free_port():
    """A loopback port nobody listens on right now, for a server the script starts."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
