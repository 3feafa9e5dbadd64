"""A raw WebSocket client for the tests: it sends exactly the frames it is told to, including the ones RFC 6455
forbids (unmasked, reserved bits and opcodes, oversized control frames, bad UTF-8), which a client library would
refuse to send. Standard library only, and the harness's Conn for reading."""

import base64
import hashlib
import os
import socket
import struct
import time
import zlib

from harness import Conn

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0, 1, 2, 8, 9, 10


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(opcode, payload=b"", fin=True, rsv=0, mask=True, length=None):
    """One frame as bytes; `length` overrides the declared payload length."""
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + reason


def deflate(data):
    """A permessage-deflate message body: raw deflate, sync-flushed, the 00 00 ff ff tail stripped."""
    z = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Frame:
    def __init__(self, fin, rsv, opcode, payload):
        self.fin, self.rsv, self.opcode, self.payload = fin, rsv, opcode, payload

    @property
    def code(self):
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005

    @property
    def reason(self):
        return self.payload[2:]

    def __repr__(self):
        return "Frame(op=%d fin=%d rsv=%d %r)" % (self.opcode, self.fin, self.rsv, self.payload[:60])


class WS(Conn):
    """A WebSocket over a raw socket (harness.Conn's reading underneath). Opens with the handshake; `status`,
    `headers` (first of each name) and `body` are the server's answer; bytes after the head stay in `buf`."""

    def __init__(self, server, path="/echo", headers=(), key=None, version="13", extensions=None, timeout=10):
        super().__init__(server.connect(timeout))
        self.key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        lines = ["GET %s HTTP/1.1" % path, "Host: test", "Upgrade: websocket", "Connection: Upgrade"]
        if self.key:
            lines.append("Sec-WebSocket-Key: " + self.key)
        if version:
            lines.append("Sec-WebSocket-Version: " + version)
        if extensions:
            lines.append("Sec-WebSocket-Extensions: " + extensions)
        lines += ["%s: %s" % h for h in headers]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        r = self.read_response()   # a 101 has no body: what follows it stays in buf
        self.status, self.body = r.status, r.body
        self.headers = {}
        for k, v in r.headers:
            self.headers.setdefault(k, v)

    def send_frame(self, opcode, payload=b"", **kw):
        self.sock.sendall(frame(opcode, payload, **kw))

    def text(self, s):
        self.send_frame(TEXT, s.encode() if isinstance(s, str) else s)

    def recv_frame(self):
        """The next frame from the server, which must be unmasked."""
        b0, b1 = self.read_exact(2)
        n = b1 & 0x7F
        assert not b1 & 0x80, "a server frame was masked"
        if n == 126:
            n = struct.unpack("!H", self.read_exact(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self.read_exact(8))[0]
        return Frame(b0 >> 7, (b0 >> 4) & 7, b0 & 0xF, self.read_exact(n))

    def recv_message(self, skip_pings=True):
        """The next data frame (answering or skipping pings)."""
        while True:
            f = self.recv_frame()
            if f.opcode == PING and skip_pings:
                continue
            return f

    def expect_close(self, reply=True):
        """Reads up to the server's close frame (skipping data and pings); answers it; returns it."""
        while True:
            f = self.recv_frame()
            if f.opcode == CLOSE:
                if reply:
                    try:
                        self.send_frame(CLOSE, f.payload[:2])
                    except OSError:
                        pass
                return f

    def closed_by_peer(self, timeout=10):
        """Whether the server closes the TCP connection within timeout (reading and dropping anything before)."""
        self.sock.settimeout(timeout)
        deadline = time.time() + timeout
        try:
            while time.time() < deadline:
                if not self.sock.recv(65536):
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True
        return False

    def close(self):
        try:
            super().close()
        except OSError:
            pass
