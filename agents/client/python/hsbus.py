"""hsbus - a small pure-Python binding of libhsbus (ctypes), for external agents.

Example::

    import hsbus

    with hsbus.Client("ipc://run/agents.sock", agent="py-portal", token="s3cret") as c:
        mid = c.send(to="audit", type="portal.visit", body=b"...")    # -> broker id
        rep = c.request(to="echo", body="ping", timeout_ms=1000)       # -> Message
        print(rep.data())                                              # "ping"
        for m in c.fetch(max=16, wait_ms=500):                         # blocking style
            try:
                handle(m)
                c.ack(m.id)
            except Exception as e:
                c.nack(m.id, str(e))
        c.flush_acks()

    # callback style: an agent that answers every request with the reversed text
    with hsbus.Client("ipc://run/agents.sock", agent="py-rev") as c:
        c.serve(lambda m: c.reply(m, m.data()[::-1]), threads=2)
        c.wait()                                  # until the daemon goes away

The library is looked up as $HSBUS_LIB, then ctypes.util.find_library("hsbus"), then
"libhsbus.so.0". Bodies: bytes are sent as a msgpack bin, str as a msgpack str; pass raw=True to
send bytes that already are one encoded msgpack value. Message.body is always the raw encoded
value; Message.data() returns the bytes/str of a bin/str body.

Every call may be made from several Python threads (the library releases the GIL while it waits,
since ctypes does). Errors raise HsbusError with .code (the hsbus_err value), .name and .text.
"""

import ctypes
import ctypes.util
import os

__all__ = ["Client", "Message", "HsbusError", "PRIO_CRITICAL", "PRIO_HIGH", "PRIO_NORMAL",
           "PRIO_LOW"]

PRIO_CRITICAL, PRIO_HIGH, PRIO_NORMAL, PRIO_LOW = 0, 1, 2, 3
# A few hsbus_err values (hsbus.h); HsbusError.name gives the name of any code.
ENOROUTE, EBUSY, EAUTH, EIO, ETIMEDOUT, ECLOSED = 14, 16, 18, 24, 25, 26
_NAME = 64 + 1
_CID = 128 + 1


class _Msg(ctypes.Structure):
    _fields_ = [
        ("id", ctypes.c_uint64), ("corr", ctypes.c_uint64), ("deadline", ctypes.c_int64),
        ("ttl_ms", ctypes.c_uint32), ("deliveries", ctypes.c_uint32), ("prio", ctypes.c_uint8),
        ("durable", ctypes.c_bool), ("cid", ctypes.c_char * _CID),
        ("from_", ctypes.c_char * _NAME), ("to", ctypes.c_char * _NAME),
        ("type", ctypes.c_char * _NAME), ("topic", ctypes.c_char * _NAME),
        ("batch", ctypes.c_char * _NAME), ("body", ctypes.POINTER(ctypes.c_uint8)),
        ("body_len", ctypes.c_size_t),
    ]


class _Opts(ctypes.Structure):
    _fields_ = [
        ("agent", ctypes.c_char_p), ("token", ctypes.c_char_p),
        ("handles", ctypes.POINTER(ctypes.c_char_p)), ("n_handles", ctypes.c_size_t),
        ("subscribes", ctypes.POINTER(ctypes.c_char_p)), ("n_subscribes", ctypes.c_size_t),
        ("timeout_ms", ctypes.c_int), ("contexts", ctypes.c_uint), ("queue_max", ctypes.c_uint),
        ("poll_ms", ctypes.c_uint), ("recv_max", ctypes.c_size_t),
    ]


_MsgP = ctypes.POINTER(_Msg)
_HANDLER = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, _MsgP, ctypes.c_void_p)


def _load():
    path = os.environ.get("HSBUS_LIB") or ctypes.util.find_library("hsbus") or "libhsbus.so.0"
    lib = ctypes.CDLL(path)
    sig = {
        "hsbus_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "hsbus_err_name": (ctypes.c_char_p, [ctypes.c_int]),
        "hsbus_errmsg": (ctypes.c_char_p, [ctypes.c_void_p]),
        "hsbus_connect": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(_Opts),
                                         ctypes.POINTER(ctypes.c_void_p)]),
        "hsbus_close": (None, [ctypes.POINTER(ctypes.c_void_p)]),
        "hsbus_send": (ctypes.c_int, [ctypes.c_void_p, _MsgP, ctypes.POINTER(ctypes.c_uint64)]),
        "hsbus_request": (ctypes.c_int, [ctypes.c_void_p, _MsgP, ctypes.c_int,
                                         ctypes.POINTER(_MsgP)]),
        "hsbus_reply": (ctypes.c_int, [ctypes.c_void_p, _MsgP, ctypes.c_void_p, ctypes.c_size_t]),
        "hsbus_fetch": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                                       ctypes.POINTER(_MsgP), ctypes.POINTER(ctypes.c_size_t)]),
        "hsbus_ack": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint64]),
        "hsbus_nack": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p]),
        "hsbus_flush_acks": (ctypes.c_int, [ctypes.c_void_p]),
        "hsbus_wait": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int]),
        "hsbus_set_handler": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]),
        "hsbus_start": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_uint]),
        "hsbus_msg_init": (None, [_MsgP]),
        "hsbus_msg_clear": (None, [_MsgP]),
        "hsbus_msg_free": (None, [ctypes.POINTER(_MsgP)]),
        "hsbus_msg_set_body_bin": (ctypes.c_int, [_MsgP, ctypes.c_char_p, ctypes.c_size_t]),
        "hsbus_msg_set_body_str": (ctypes.c_int, [_MsgP, ctypes.c_char_p, ctypes.c_size_t]),
        "hsbus_msg_set_body_raw": (ctypes.c_int, [_MsgP, ctypes.c_char_p, ctypes.c_size_t]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


_lib = None


def _L():
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


class HsbusError(Exception):
    """A libhsbus call failed: code is the hsbus_err value, name its C name, text the detail."""

    def __init__(self, code, text=""):
        self.code = code
        self.name = _L().hsbus_err_name(code).decode()
        self.text = text or _L().hsbus_strerror(code).decode()
        super().__init__("%s: %s" % (self.name, self.text))


def _dec_body(raw):
    """Returns the bytes/str inside a msgpack bin/str value, or None for anything else."""
    if not raw:
        return None
    b = raw[0]
    if 0xa0 <= b <= 0xbf:
        return raw[1:1 + (b & 0x1f)].decode("utf-8", "replace")
    widths = {0xc4: (1, False), 0xc5: (2, False), 0xc6: (4, False),
              0xd9: (1, True), 0xda: (2, True), 0xdb: (4, True)}
    if b not in widths:
        return None
    w, is_str = widths[b]
    n = int.from_bytes(raw[1:1 + w], "big")
    data = raw[1 + w:1 + w + n]
    return data.decode("utf-8", "replace") if is_str else data


class Message:
    """A received message (a copy: it does not refer to library memory)."""

    __slots__ = ("id", "corr", "deadline", "ttl_ms", "deliveries", "prio", "durable", "cid",
                 "sender", "to", "type", "topic", "batch", "body")

    def __init__(self, m):
        self.id, self.corr, self.deadline = m.id, m.corr, m.deadline
        self.ttl_ms, self.deliveries, self.prio = m.ttl_ms, m.deliveries, m.prio
        self.durable = bool(m.durable)
        self.cid = m.cid.decode()
        self.sender = m.from_.decode()
        self.to, self.type = m.to.decode(), m.type.decode()
        self.topic, self.batch = m.topic.decode(), m.batch.decode()
        self.body = ctypes.string_at(m.body, m.body_len) if m.body_len else b""

    def data(self):
        """The bytes (bin) or str (str) the body carries; None for another msgpack type."""
        return _dec_body(self.body)

    def __repr__(self):
        return "Message(id=%d, corr=%d, from=%r, to=%r, type=%r, body=%d bytes)" % (
            self.id, self.corr, self.sender, self.to, self.type, len(self.body))


class Client:
    """One connection to hsbusd acting as one agent. Thread-safe; close() (or `with`) at the end."""

    def __init__(self, url, agent, token=None, handles=(), subscribes=(), timeout_ms=10000,
                 contexts=16):
        lib = _L()
        self._keep = [s.encode() for s in handles] + [s.encode() for s in subscribes]
        h = (ctypes.c_char_p * max(1, len(handles)))(*[s.encode() for s in handles])
        s = (ctypes.c_char_p * max(1, len(subscribes)))(*[x.encode() for x in subscribes])
        self._arrays = (h, s)
        opts = _Opts(agent=agent.encode(), token=token.encode() if token else None,
                     handles=h, n_handles=len(handles), subscribes=s,
                     n_subscribes=len(subscribes), timeout_ms=timeout_ms, contexts=contexts)
        self._c = ctypes.c_void_p()
        rv = lib.hsbus_connect(url.encode(), ctypes.byref(opts), ctypes.byref(self._c))
        if rv != 0:
            raise HsbusError(rv, (lib.hsbus_errmsg(None) or b"").decode())

    def _check(self, rv):
        if rv != 0:
            raise HsbusError(rv, (_L().hsbus_errmsg(self._c) or b"").decode())

    def _build(self, m, to, type, topic, body, raw, prio, ttl_ms, corr, cid, durable, batch):
        lib = _L()
        lib.hsbus_msg_init(ctypes.byref(m))
        m.to = (to or "").encode()
        m.type = (type or "").encode()
        m.topic = (topic or "").encode()
        m.batch = (batch or "").encode()
        m.cid = (cid or "").encode()
        m.prio, m.ttl_ms, m.corr, m.durable = prio, ttl_ms, corr, durable
        if body is None:
            return
        if raw:
            self._check(lib.hsbus_msg_set_body_raw(ctypes.byref(m), body, len(body)))
        elif isinstance(body, str):
            b = body.encode()
            self._check(lib.hsbus_msg_set_body_str(ctypes.byref(m), b, len(b)))
        else:
            b = bytes(body)
            self._check(lib.hsbus_msg_set_body_bin(ctypes.byref(m), b, len(b)))

    def send(self, to=None, type=None, topic=None, body=None, raw=False, prio=PRIO_NORMAL,
             ttl_ms=0, corr=0, cid=None, durable=False, batch=None):
        """Sends one message; returns the id the daemon gave it."""
        m, mid = _Msg(), ctypes.c_uint64()
        try:
            self._build(m, to, type, topic, body, raw, prio, ttl_ms, corr, cid, durable, batch)
            self._check(_L().hsbus_send(self._c, ctypes.byref(m), ctypes.byref(mid)))
        finally:
            _L().hsbus_msg_clear(ctypes.byref(m))
        return mid.value

    def request(self, to=None, type=None, topic=None, body=None, raw=False, timeout_ms=0,
                prio=PRIO_NORMAL, ttl_ms=0, cid=None):
        """Sends a message and waits for its reply (a Message)."""
        m, rep = _Msg(), _MsgP()
        try:
            self._build(m, to, type, topic, body, raw, prio, ttl_ms, 0, cid, False, None)
            self._check(_L().hsbus_request(self._c, ctypes.byref(m), timeout_ms,
                                           ctypes.byref(rep)))
            out = Message(rep.contents)
        finally:
            _L().hsbus_msg_clear(ctypes.byref(m))
            _L().hsbus_msg_free(ctypes.byref(rep))
        return out

    def reply(self, req, body=None, raw=False):
        """Answers req (a Message) with body."""
        m = _Msg()
        _L().hsbus_msg_init(ctypes.byref(m))
        m.id, m.from_, m.prio = req.id, req.sender.encode(), req.prio
        tmp = _Msg()
        try:
            self._build(tmp, None, None, None, body, raw, 0, 0, 0, None, False, None)
            payload = ctypes.string_at(tmp.body, tmp.body_len) if tmp.body_len else None
            self._check(_L().hsbus_reply(self._c, ctypes.byref(m), payload,
                                         len(payload) if payload else 0))
        finally:
            _L().hsbus_msg_clear(ctypes.byref(tmp))

    def fetch(self, max=64, wait_ms=1000):
        """Returns a list of up to max Messages; each must be acked or nacked."""
        arr, n = (_MsgP * max)(), ctypes.c_size_t()
        self._check(_L().hsbus_fetch(self._c, max, wait_ms, arr, ctypes.byref(n)))
        out = []
        for i in range(n.value):
            out.append(Message(arr[i].contents))
            p = _MsgP(arr[i].contents)
            _L().hsbus_msg_free(ctypes.byref(p))
        return out

    def ack(self, mid):
        self._check(_L().hsbus_ack(self._c, mid))

    def nack(self, mid, reason=""):
        self._check(_L().hsbus_nack(self._c, mid, reason.encode()))

    def flush_acks(self):
        self._check(_L().hsbus_flush_acks(self._c))

    def serve(self, fn, threads=1):
        """Callback style: runs fn(message) on `threads` library threads for every message that
        is not a reply to a request of ours. Returning normally acks the message; raising nacks it
        (the exception text is the reason). fn may call reply(), send() and request(). Returns at
        once; the threads run until close(). Use wait() to block the main thread."""

        def trampoline(_client, msg, _arg):
            try:
                fn(Message(msg.contents))
                return 0
            except Exception:  # the daemon redelivers; the breaker counts the failure
                return 22  # HSBUS_EINTERNAL

        self._handler = _HANDLER(trampoline)  # keep it alive as long as the client
        self._check(_L().hsbus_set_handler(self._c, ctypes.cast(self._handler, ctypes.c_void_p),
                                           None))
        self._check(_L().hsbus_start(self._c, threads))

    def wait(self, timeout_ms=-1):
        """Blocks until the connection is lost (returns False) or timeout_ms passes (True)."""
        rv = _L().hsbus_wait(self._c, timeout_ms)
        if rv not in (ECLOSED, ETIMEDOUT):
            self._check(rv)
        return rv != ECLOSED

    def close(self):
        """Says bye and frees the client. Safe to call twice."""
        if self._c:
            _L().hsbus_close(ctypes.byref(self._c))
            self._c = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
