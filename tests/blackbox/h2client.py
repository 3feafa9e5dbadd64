"""HTTP/2 clients for the black-box tests, on Debian's python3-h2 and python3-hpack.

H2: a well-behaved client (h2's state machine) that keeps every stream's response, for requests of any shape.
Raw: frames as bytes, for what a well-behaved client never sends (RFC 9113's errors, floods); it reads the server's
frames back as (type, flags, stream, payload)."""

import socket
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Frame types and flags (RFC 9113 6), and error codes (7).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED = 0x1, 0x1, 0x4, 0x8
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x6, 0x7, 0x8, 0x9, 0xb


class Response:
    def __init__(self):
        self.status = None
        self.headers = {}
        self.informational = []
        self.body = b""
        self.ended = False
        self.reset = None  # the RST_STREAM error code, if the server reset the stream


class H2:
    """A client connection (socket: a connected one, plain or TLS)."""

    def __init__(self, sock, settings=None, window=None):
        self.sock = sock
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        if window:
            self.conn.increment_flow_control_window(window)
        self.flush()
        self.streams = {}
        self.goaway = None  # (error_code, last_stream_id)
        self.closed = False
        self.remote_settings = {}
        self.auto_window = True  # give the server's DATA back its window as it arrives

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, path, method="GET", headers=(), body=None, end=True, authority="localhost"):
        sid = self.conn.get_next_available_stream_id()
        hdrs = [(":method", method), (":path", path), (":scheme", "http"), (":authority", authority)]
        hdrs += list(headers)
        self.conn.send_headers(sid, hdrs, end_stream=body is None and end)
        self.streams[sid] = Response()
        if body is not None:
            self.send_body(sid, body, end)
        self.flush()
        return sid

    def send_body(self, sid, body, end=True):
        """Sends as the windows allow, reading the server's WINDOW_UPDATEs meanwhile."""
        while body:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window == 0:
                self.read(5)
                continue
            chunk, body = body[:window], body[window:]
            self.conn.send_data(sid, chunk)
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def read(self, timeout=10):
        """One read's worth of frames; False once the connection is closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.closed = True
            return False
        for ev in self.conn.receive_data(data):
            self.on_event(ev)
        self.flush()
        return True

    def on_event(self, ev):
        s = self.streams.get(getattr(ev, "stream_id", None))
        if isinstance(ev, h2.events.ResponseReceived):
            s.headers = {k.decode(): v.decode() for k, v in ev.headers}
            s.status = int(s.headers[":status"])
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            s.informational.append(int(dict(ev.headers)[b":status"]))
        elif isinstance(ev, h2.events.DataReceived):
            s.body += ev.data
            if self.auto_window and ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.StreamEnded):
            s.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if s is not None:
                s.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = (ev.error_code, ev.last_stream_id)
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self.remote_settings.update({k: v.new_value for k, v in ev.changed_settings.items()})

    def wait(self, pred, timeout=10):
        deadline = time.time() + timeout
        while not pred():
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("HTTP/2: still waiting after %s s" % timeout)
            if not self.read(left):
                if pred():
                    return
                raise ConnectionError("HTTP/2: the server closed the connection (GOAWAY %s)" % (self.goaway,))

    def response(self, sid, timeout=10):
        s = self.streams[sid]
        self.wait(lambda: s.ended or s.reset is not None, timeout)
        return s

    def get(self, path, **kw):
        return self.response(self.request(path, **kw))

    def close(self):
        self.sock.close()


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def settings_frame(pairs=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


class Raw:
    """Frames by hand. The preface and an empty SETTINGS go first unless preface=False. The server's SETTINGS are
    acknowledged as they are read, unless ack=False."""

    def __init__(self, sock, preface=True, ack=True):
        self.sock = sock
        self.ack = ack
        self.buf = b""
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        if preface:
            self.send(PREFACE + settings_frame())

    def send(self, data):
        self.sock.sendall(data)

    def headers(self, sid, fields, flags=END_HEADERS | END_STREAM, encode=True):
        block = self.enc.encode(fields) if encode else fields
        self.send(frame(HEADERS, flags, sid, block))

    def request_fields(self, path="/", method="GET"):
        return [(":method", method), (":path", path), (":scheme", "http"), (":authority", "localhost")]

    def next_frame(self, timeout=10):
        """(type, flags, stream, payload), or None once the connection is closed."""
        self.sock.settimeout(timeout)
        while True:
            if len(self.buf) >= 9:
                n = int.from_bytes(self.buf[:3], "big")
                if len(self.buf) >= 9 + n:
                    ftype, flags, sid = struct.unpack(">BBI", self.buf[3:9])
                    payload, self.buf = self.buf[9:9 + n], self.buf[9 + n:]
                    if ftype == SETTINGS and not flags & ACK and self.ack:
                        try:
                            self.send(settings_frame(ack=True))
                        except (BrokenPipeError, ConnectionResetError):
                            pass
                    return ftype, flags, sid & 0x7fffffff, payload
            try:
                data = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                return None
            self.buf += data

    def until(self, want, timeout=10):
        """Frames until one of type `want` (returned), or None if the connection ends first."""
        deadline = time.time() + timeout
        while True:
            f = self.next_frame(max(0.1, deadline - time.time()))
            if f is None or f[0] == want:
                return f
            if time.time() > deadline:
                raise TimeoutError("no frame of type %d" % want)

    def decode(self, payload):
        return {k.decode(): v.decode() for k, v in self.dec.decode(payload, raw=True)}


def goaway_code(f):
    """The error code of a GOAWAY frame, and the last stream id."""
    last, code = struct.unpack(">II", f[3][:8])
    return code, last & 0x7fffffff


def rst_code(f):
    return struct.unpack(">I", f[3][:4])[0]


def closed_or_goaway(raw, timeout=10):
    """Reads until the server closes the connection; the GOAWAY's error code if one came first, else None."""
    code = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            f = raw.next_frame(max(0.1, deadline - time.time()))
        except socket.timeout:
            break
        if f is None:
            return code
        if f[0] == GOAWAY:
            code = goaway_code(f)[0]
    raise TimeoutError("the server kept the connection open")
