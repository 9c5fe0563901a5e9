"""A chatsim phone in Python, written from docs/protocol.md alone.

It shares no code with the Rust server or its clients: the frames are encoded and decoded
here by hand from the protocol page's postcard rules, and the end-to-end sealing is done with
the `cryptography` package from the page's description of the keys and the envelope. What it
does: connect to a gateway over WebSocket, prove its identity (Hello with its token and a
fresh epoch), drain its inbox page by page, send direct texts sealed for every device of the
peer and its own other devices (retried with the same id until Sent), receive, open its own
copy, show each message once and in sequence order (fetching gaps), acknowledge every
delivery, send delivered receipts and answer the receipts it gets, keep a heartbeat, and
reconnect. Groups, presence and companions linked later are not implemented.

Its keys and token come from `chatsim keys DEVICE` (a JSON file): the stand-in for
provisioning that docs/protocol.md describes.

    python chatsim_client.py selftest --me u0.json --peer u1.json --state DIR
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import sys
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from websockets.asyncio.client import connect

# ---- limits and timings from docs/protocol.md --------------------------------------------

FRAME_BYTES_MAX = 1 << 20
HEARTBEAT_INTERVAL_S = 2.0
HEARTBEAT_TIMEOUT_S = 6.0
HANDSHAKE_TIMEOUT_S = 3.0
OUTBOX_RETRY_S = 1.0
DRAIN_RETRY_S = 2.0
GAP_REPAIR_DELAY_S = 0.5
RECEIPT_RETRY_S = 2.0
ID_BLOCK = 1000

# ---- postcard -----------------------------------------------------------------------------


class Writer:
    """postcard's encoding: varints for u16/u32/u64 and enum tags, raw bytes for u8 and bool."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def varint(self, n: int) -> "Writer":
        if n < 0:
            raise ValueError("varints here are unsigned")
        while True:
            byte = n & 0x7F
            n >>= 7
            if n:
                self.buf.append(byte | 0x80)
            else:
                self.buf.append(byte)
                return self

    def u8(self, n: int) -> "Writer":
        self.buf.append(n & 0xFF)
        return self

    def bool(self, b: bool) -> "Writer":
        return self.u8(1 if b else 0)

    def bytes(self, b: bytes) -> "Writer":
        self.varint(len(b))
        self.buf += b
        return self


class Truncated(Exception):
    pass


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u8(self) -> int:
        if self.pos >= len(self.data):
            raise Truncated()
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        n, shift = 0, 0
        while True:
            b = self.u8()
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                return n
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def bool(self) -> bool:
        b = self.u8()
        if b > 1:
            raise ValueError("not a bool")
        return b == 1

    def bytes(self) -> bytes:
        n = self.varint()
        if self.pos + n > len(self.data):
            raise Truncated()
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return bytes(out)

    def option(self, read):
        return read() if self.bool() else None

    def vec(self, read) -> list:
        return [read() for _ in range(self.varint())]


# ---- identifiers --------------------------------------------------------------------------

Device = tuple  # (user, index)


def write_device(w: Writer, d: Device) -> None:
    w.varint(d[0]).u8(d[1])


def read_device(r: Reader) -> Device:
    return (r.varint(), r.u8())


def device_name(d: Device) -> str:
    return f"u{d[0]}.d{d[1]}"


def direct_conv(a: int, b: int) -> int:
    lo, hi = sorted((a, b))
    return (lo << 32) | hi


def is_group(conv: int) -> bool:
    return bool(conv >> 63)


@dataclass(frozen=True, order=True)
class MsgId:
    device: Device
    n: int


def write_msg_id(w: Writer, i: MsgId) -> None:
    write_device(w, i.device)
    w.varint(i.n)


def read_msg_id(r: Reader) -> MsgId:
    return MsgId(read_device(r), r.varint())


# ---- frames -------------------------------------------------------------------------------

HOST_DEVICE = 6
WIRE_UP, WIRE_DOWN = 1, 2

UP_HELLO, UP_SEND, UP_ACK, UP_DRAIN, UP_FETCH = 0, 1, 2, 3, 4
UP_RECEIPT, UP_RECEIPT_SEEN, UP_PING = 6, 7, 9

DOWN_NAMES = [
    "Welcome",
    "Refused",
    "Sent",
    "Deliver",
    "DrainPage",
    "Pulled",
    "Linked",
    "ReceiptAck",
    "Receipt",
    "Presence",
    "Pong",
]
REFUSALS = [
    "BadToken",
    "NotAuthenticated",
    "NotMember",
    "Busy",
    "GroupFull",
    "StaleMembers",
    "BadGroupOp",
    "StaleDevices",
]
DELIVERED, READ = 0, 1
PATH_LIVE, PATH_INBOX, PATH_FETCH = 0, 1, 2


def up_frame(me: Device, up: Writer) -> bytes:
    """One whole frame: a big-endian u32 length, then postcard's Frame { from, sent_ms, wire }."""
    body = Writer()
    body.varint(HOST_DEVICE)
    write_device(body, me)
    body.varint(int(time.time() * 1000))
    body.varint(WIRE_UP)
    body.buf += up.buf
    return len(body.buf).to_bytes(4, "big") + bytes(body.buf)


def read_host(r: Reader):
    tag = r.varint()
    if tag in (0, 2, 3, 4):  # Gateway, Shard, Storage, Replica carry a u16
        return (tag, r.varint())
    if tag in (1, 5):  # Session, Push
        return (tag, None)
    if tag == 6:
        return (tag, read_device(r))
    raise ValueError(f"host tag {tag}")


def read_receipt(r: Reader) -> dict:
    return {"conv": r.varint(), "reader": read_device(r), "kind": r.varint(), "upto": r.varint()}


def write_seen(w: Writer, rc: dict) -> None:
    """`ReceiptSeen { conv, seen }` for one receipt: the server takes a list per conversation
    (the Rust phone gathers a moment's worth; this client says each one at once)."""
    w.varint(rc["conv"]).varint(1)
    write_device(w, rc["reader"])
    w.varint(rc["kind"]).varint(rc["upto"])


def read_group_op(r: Reader) -> dict:
    tag = r.varint()
    if tag == 0:
        return {"op": "Create", "members": r.vec(r.varint)}
    if tag in (1, 2):
        return {"op": ["Add", "Remove"][tag - 1], "user": r.varint()}
    raise ValueError(f"group op tag {tag}")


def read_message(r: Reader) -> dict:
    m = {
        "conv": r.varint(),
        "seq": r.varint(),
        "id": read_msg_id(r),
        "body": r.bytes(),
        "sent_at": r.varint(),
    }
    m["event"] = r.option(lambda: {"op": read_group_op(r), "members": r.vec(r.varint)})
    m["keys"] = r.vec(lambda: (read_device(r), r.bytes()))
    return m


def read_cursor(r: Reader) -> tuple:
    return (r.varint(), r.varint())


def decode_down(data: bytes) -> dict:
    """One WebSocket message from the gateway: exactly one frame, and a Down one."""
    if len(data) < 4 or int.from_bytes(data[:4], "big") != len(data) - 4:
        raise ValueError("not one whole frame")
    r = Reader(data[4:])
    read_host(r)
    r.varint()  # sent_ms: a header for diagrams only
    if r.varint() != WIRE_DOWN:
        raise ValueError("not a Down frame")
    tag = r.varint()
    name = DOWN_NAMES[tag] if tag < len(DOWN_NAMES) else None
    d: dict = {"kind": name}
    if name == "Welcome":
        d["epoch"] = r.varint()
    elif name == "Refused":
        reason = r.varint()
        d["reason"] = REFUSALS[reason] if reason < len(REFUSALS) else reason
        if d["reason"] == "StaleMembers":
            d["version"] = r.varint()
        elif d["reason"] == "StaleDevices":
            d["device"] = read_device(r)
        d["id"] = r.option(lambda: read_msg_id(r))
    elif name == "Sent":
        d.update(conv=r.varint(), id=read_msg_id(r), seq=r.varint())
    elif name == "Deliver":
        d["msg"] = read_message(r)
        d["path"] = r.varint()
    elif name == "DrainPage":
        d["next"] = r.option(lambda: read_cursor(r))
        d["more"] = r.bool()
        d["receipts_more"] = r.bool()
    elif name == "Pulled":
        d.update(conv=r.varint(), last=r.varint())
    elif name == "ReceiptAck":
        d.update(conv=r.varint(), kind=r.varint(), upto=r.varint())
    elif name == "Receipt":
        d["receipt"] = read_receipt(r)
    elif name == "Presence":
        d.update(user=r.varint(), online=r.bool(), last_seen=r.varint())
    elif name in ("Linked", "Pong"):
        pass
    else:
        raise ValueError(f"Down tag {tag}")
    return d


# ---- end-to-end sealing -------------------------------------------------------------------


def le32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def direction_key(shared: bytes, frm: Device, to: Device) -> ChaCha20Poly1305:
    info = le32(frm[0]) + bytes([frm[1]]) + le32(to[0]) + bytes([to[1]])
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"chatsim-e2e-v1", info=info).derive(
        shared
    )
    return ChaCha20Poly1305(key)


def nonce(i: MsgId) -> bytes:
    return le32(i.n) + le32(i.device[0]) + bytes([i.device[1]]) + b"\0\0\0"


class Keys:
    def __init__(self, me: Device, secret_hex: str, directory: dict) -> None:
        self.me = me
        self.secret = X25519PrivateKey.from_private_bytes(bytes.fromhex(secret_hex))
        self.directory = directory  # Device -> public key bytes
        self.sessions: dict = {}

    def session(self, peer: Device):
        if peer not in self.sessions:
            shared = self.secret.exchange(X25519PublicKey.from_public_bytes(self.directory[peer]))
            self.sessions[peer] = (
                direction_key(shared, self.me, peer),
                direction_key(shared, peer, self.me),
            )
        return self.sessions[peer]

    def seal_bundle(self, recipients: list, i: MsgId, plaintext: bytes) -> bytes:
        w = Writer().varint(len(recipients))
        for to in recipients:
            write_device(w, to)
            w.bytes(self.session(to)[0].encrypt(nonce(i), plaintext, None))
        return bytes(w.buf)

    def open_bundle(self, i: MsgId, body: bytes):
        """Our copy's plaintext, or None: a body that is not a bundle, no copy for us, a
        sender not in the directory, or a copy that does not open are all the same to a user."""
        try:
            r = Reader(body)
            copies = r.vec(lambda: (read_device(r), r.bytes()))
            for d, ct in copies:
                if d == self.me:
                    return self.session(i.device)[1].decrypt(nonce(i), ct, None)
        except Exception:
            return None
        return None


# ---- message ids that survive a restart ---------------------------------------------------


class IdStore:
    """The device's message id counter: a restarted client must never reuse an id (the
    protocol's identifiers table). Reserved a block at a time, synced before use."""

    def __init__(self, path: str) -> None:
        self.path = path
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        # Two processes on one counter would hand out the same ids: the second is refused.
        self.lock = open(os.path.splitext(path)[0] + ".lock", "w")
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{path}: another client is running this device from this state folder")
        try:
            with open(path) as f:
                self.start = int(f.read().strip())
        except FileNotFoundError:
            self.start = 0
        self.next = self.start
        self.reserved = self.start
        self._reserve(self.start)

    def _reserve(self, frm: int) -> None:
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        aside = self.path + ".tmp"
        with open(aside, "w") as f:
            f.write(f"{frm + ID_BLOCK}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(aside, self.path)
        self.reserved = frm + ID_BLOCK

    def take(self) -> int:
        if self.next >= self.reserved:
            self._reserve(self.next)
        n = self.next
        self.next += 1
        return n


# ---- the phone ----------------------------------------------------------------------------


@dataclass
class Outgoing:
    conv: int
    peer: int
    text: bytes
    sent_at: int
    last_try: float = 0.0
    seq: int | None = None


@dataclass
class ConvView:
    next_seq: int = 1
    held: dict = field(default_factory=dict)  # seq -> message, waiting for the gap before it
    own: set = field(default_factory=set)  # seqs of our own messages
    gap_since: float | None = None
    receipt_sent: int = 0
    receipt_acked: int = 0
    # Sender devices of what was shown since the last receipt was acked: the receipt's notify.
    senders: set = field(default_factory=set)


class Phone:
    def __init__(self, provisioning: dict, state_dir: str, log=print) -> None:
        dev = provisioning["device"]
        self.me: Device = (dev["user"], dev["index"])
        self.token = int(provisioning["token"])
        directory = {
            (d["user"], d["index"]): bytes.fromhex(d["public"]) for d in provisioning["directory"]
        }
        self.keys = Keys(self.me, provisioning["secret"], directory)
        self.devices = sorted(directory)
        self.gateways = provisioning["gateways"]
        self.ids = IdStore(os.path.join(state_dir, f"{device_name(self.me)}.next-id"))
        self.epoch = int(time.time() * 1000)
        self.log = log
        self.outbox: dict[MsgId, Outgoing] = {}
        self.convs: dict[int, ConvView] = {}
        self.seen: set[MsgId] = set()
        self.shown: list[tuple[Device, str]] = []
        self.duplicates = 0
        self.deliveries = 0
        self.inbox_deliveries = 0  # of them, from a drain of the inbox
        self.ticks: dict[MsgId, str] = {}
        self.my_seqs: dict[MsgId, tuple] = {}
        self.hold_acks = False
        self.online = True
        self.ready = asyncio.Event()
        self.changed = asyncio.Event()
        self.drained = 0  # complete drains
        self.ws = None
        self.task: asyncio.Task | None = None
        self.connections = 0

    # -- what a user does

    def start(self) -> None:
        self.online = True
        self.task = asyncio.ensure_future(self._run())

    async def go_offline(self) -> None:
        self.online = False
        self.ready.clear()
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.task = None

    def send_text(self, peer_user: int, text: str) -> MsgId:
        conv = direct_conv(self.me[0], peer_user)
        i = MsgId(self.me, self.ids.take())
        self.outbox[i] = Outgoing(conv, peer_user, text.encode(), int(time.time() * 1000))
        self.ticks[i] = "clock"
        if self.ws is not None and self.ready.is_set():
            asyncio.ensure_future(self._transmit(i))
        return i

    # -- waiting, for tests and scripts

    async def until(self, what, timeout: float = 15.0, why: str = "") -> None:
        end = time.monotonic() + timeout
        while not what():
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{device_name(self.me)}: {why or 'condition'} not met")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.2))
            except asyncio.TimeoutError:
                pass

    def _changed(self) -> None:
        self.changed.set()

    # -- the connection

    async def _run(self) -> None:
        backoff = 0.1
        while self.online:
            url = self.gateways[self.connections % len(self.gateways)]
            self.connections += 1
            try:
                async with connect(url, max_size=4 + FRAME_BYTES_MAX, open_timeout=2) as ws:
                    backoff = 0.1
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a dropped connection: reconnect, as the protocol says
                self.log(f"{device_name(self.me)}: connection ended: {e!r}")
            finally:
                self.ws = None
                self.ready.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    async def _send(self, up: Writer) -> None:
        ws = self.ws
        if ws is not None:
            await ws.send(up_frame(self.me, up))

    async def _session(self, ws) -> None:
        self.ws = ws
        self.epoch += 1
        epoch = self.epoch
        hello = Writer().varint(UP_HELLO)
        write_device(hello, self.me)
        hello.varint(self.token).varint(epoch)
        await ws.send(up_frame(self.me, hello))
        heard = time.monotonic()
        welcomed_by = time.monotonic() + HANDSHAKE_TIMEOUT_S
        timers = asyncio.ensure_future(self._timers(ws))
        try:
            while True:
                wait = HEARTBEAT_TIMEOUT_S - (time.monotonic() - heard)
                if not self.ready.is_set():
                    wait = min(wait, welcomed_by - time.monotonic())
                if wait <= 0:
                    raise TimeoutError("no Welcome" if not self.ready.is_set() else "heartbeat")
                try:
                    data = await asyncio.wait_for(ws.recv(), wait)
                except asyncio.TimeoutError:
                    continue
                heard = time.monotonic()
                if isinstance(data, str):
                    raise ValueError("a text message from the gateway")
                try:
                    down = decode_down(data)
                except (ValueError, Truncated) as e:
                    self.log(f"{device_name(self.me)}: skipped a frame it cannot read: {e}")
                    continue
                await self._on_down(down, epoch)
                self._changed()
        finally:
            timers.cancel()

    async def _timers(self, ws) -> None:
        """Heartbeat, and the retries of everything unanswered."""
        while True:
            await ws.send(up_frame(self.me, Writer().varint(UP_PING)))
            if self.ready.is_set():
                now = time.monotonic()
                for i, o in list(self.outbox.items()):
                    if now - o.last_try >= OUTBOX_RETRY_S:
                        await self._transmit(i)
                for conv, view in self.convs.items():
                    await self._repair_gap(conv, view, now)
                    if view.receipt_sent > view.receipt_acked:
                        await self._send_receipt(conv, view)
                if now - self.drain_asked >= DRAIN_RETRY_S and self.draining:
                    await self._drain(self.drain_after)
            await asyncio.sleep(min(HEARTBEAT_INTERVAL_S, OUTBOX_RETRY_S, GAP_REPAIR_DELAY_S))

    async def _transmit(self, i: MsgId) -> None:
        o = self.outbox.get(i)
        if o is None:
            return
        o.last_try = time.monotonic()
        # Every device of the peer, and our own other devices: sealed again at each try.
        recipients = [d for d in self.devices if d[0] == o.peer or (d[0] == self.me[0] and d != self.me)]
        body = self.keys.seal_bundle(recipients, i, o.text)
        w = Writer().varint(UP_SEND).varint(o.conv)
        write_msg_id(w, i)
        w.bytes(body).varint(o.sent_at)
        w.u8(0)  # op: None
        w.varint(0)  # version: 0 for a direct conversation
        w.varint(0)  # keys: none
        await self._send(w)

    draining = False
    drain_after = None
    drain_asked = 0.0

    async def _drain(self, after) -> None:
        self.draining, self.drain_after, self.drain_asked = True, after, time.monotonic()
        w = Writer().varint(UP_DRAIN)
        if after is None:
            w.u8(0)
        else:
            w.u8(1).varint(after[0]).varint(after[1])
        await self._send(w)

    async def _on_down(self, d: dict, epoch: int) -> None:
        kind = d["kind"]
        if kind == "Welcome":
            if d["epoch"] != epoch:
                return
            self.ready.set()
            self.log(f"{device_name(self.me)}: connected (epoch {epoch})")
            await self._drain(None)
            for conv, view in self.convs.items():
                if view.receipt_sent > view.receipt_acked:
                    await self._send_receipt(conv, view)
            for i in sorted(self.outbox):
                await self._transmit(i)
        elif kind == "Refused":
            self.log(f"{device_name(self.me)}: refused: {d['reason']}")
            final = d["reason"] in ("NotMember", "GroupFull", "BadGroupOp")
            if final and d.get("id") in self.outbox:
                del self.outbox[d["id"]]
                self.ticks[d["id"]] = "refused"
            if d["reason"] == "BadToken":
                raise PermissionError("the gateway refused this device's token")
        elif kind == "Sent":
            i = d["id"]
            if self.outbox.pop(i, None) is not None:
                self.log(f"{device_name(self.me)}: sent ✓ {i.n} at seq {d['seq']}")
            self._tick(i, "sent")
            self.my_seqs[i] = (d["conv"], d["seq"])
            view = self.convs.setdefault(d["conv"], ConvView())
            view.own.add(d["seq"])
            await self._advance(d["conv"], view)
        elif kind == "Deliver":
            if d["path"] == PATH_INBOX:
                self.inbox_deliveries += 1
            await self._on_deliver(d["msg"])
        elif kind == "DrainPage":
            if d["more"] and d["next"] is not None:
                await self._drain(d["next"])
            else:
                self.draining = False
                self.drained += 1
        elif kind == "ReceiptAck":
            view = self.convs.setdefault(d["conv"], ConvView())
            view.receipt_acked = max(view.receipt_acked, d["upto"])
            if view.receipt_acked >= view.receipt_sent:
                view.senders.clear()
        elif kind == "Receipt":
            rc = d["receipt"]
            mark = "delivered" if rc["kind"] == DELIVERED else "read"
            # Cumulative: every message of ours in the conversation up to `upto`.
            for i, (conv, seq) in self.my_seqs.items():
                if conv == rc["conv"] and seq <= rc["upto"]:
                    self._tick(i, mark)
            w = Writer().varint(UP_RECEIPT_SEEN)
            write_seen(w, rc)
            await self._send(w)

    TICKS = ["clock", "sent", "delivered", "read"]

    def _tick(self, i: MsgId, mark: str) -> None:
        """Ticks only move forward."""
        old = self.ticks.get(i, "clock")
        if self.TICKS.index(mark) > self.TICKS.index(old):
            self.ticks[i] = mark

    async def _on_deliver(self, msg: dict) -> None:
        self.deliveries += 1
        conv, seq, i = msg["conv"], msg["seq"], msg["id"]
        if not self.hold_acks:
            await self._send(Writer().varint(UP_ACK).varint(conv).varint(seq))
        if is_group(conv):
            return  # groups are not implemented here
        view = self.convs.setdefault(conv, ConvView())
        if i in self.seen or seq < view.next_seq or seq in view.held:
            self.duplicates += 1
            return
        if i.device == self.me:
            # Our own message, fetched to fill a gap (sealed for everyone but us): its slot is
            # ours, nothing to show.
            view.own.add(seq)
            await self._advance(conv, view)
            return
        plaintext = self.keys.open_bundle(i, msg["body"])
        if plaintext is None:
            # Not shown, but its slot is passed: a copy that cannot be opened never will be.
            self.log(f"{device_name(self.me)}: could not open {i}")
        view.held[seq] = (i, plaintext)
        await self._advance(conv, view)

    async def _advance(self, conv: int, view: ConvView) -> None:
        """Show what is now in sequence order."""
        moved = False
        while True:
            s = view.next_seq
            if s in view.own:
                view.own.discard(s)
            elif s in view.held and view.held[s][1] is None:
                self.seen.add(view.held.pop(s)[0])
            elif s in view.held:
                i, text = view.held.pop(s)
                self.seen.add(i)
                self.shown.append((i.device, text.decode(errors="replace")))
                view.senders.add(i.device)
                self.log(f"{device_name(self.me)}: shows {text.decode(errors='replace')!r} from {device_name(i.device)} (seq {s})")
                view.receipt_sent = s
            else:
                break
            view.next_seq += 1
            moved = True
        view.gap_since = time.monotonic() if view.held else None
        if moved and view.receipt_sent > view.receipt_acked:
            await self._send_receipt(conv, view)

    async def _repair_gap(self, conv: int, view: ConvView, now: float) -> None:
        if view.held and view.gap_since is not None and now - view.gap_since >= GAP_REPAIR_DELAY_S:
            to = min(view.held) - 1
            await self._send(Writer().varint(UP_FETCH).varint(conv).varint(view.next_seq).varint(to))
            view.gap_since = now

    async def _send_receipt(self, conv: int, view: ConvView) -> None:
        # Withholding acks (the self-test's crash before storing) withholds receipts too: a
        # delivered receipt also clears the inbox entries it covers.
        if not view.senders or self.hold_acks:
            return
        w = Writer().varint(UP_RECEIPT).varint(conv).varint(DELIVERED).varint(view.receipt_sent)
        w.varint(len(view.senders))
        for d in sorted(view.senders):
            write_device(w, d)
        await self._send(w)


# ---- the self-test ------------------------------------------------------------------------


def load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


async def selftest(args) -> int:
    logs: list[str] = []

    def log(line: str) -> None:
        logs.append(line)
        print(line, flush=True)

    a = Phone(load(args.me), args.state, log)
    b = Phone(load(args.peer), args.state, log)
    bu = b.me[0]
    shown_by_b = lambda text: any(t == text for _, t in b.shown)  # noqa: E731

    a.start()
    b.start()
    await a.until(a.ready.is_set, why="connect")
    await b.until(b.ready.is_set, why="connect")
    log("step: both devices registered")

    # Texts carry this run's tag: a server that kept an earlier run's messages hands them
    # back too (drained or fetched), and they must not pass for this run's.
    tag = f"run {a.ids.start}"
    hello = lambda k: f"hello {k} ({tag})"  # noqa: E731
    first = a.send_text(bu, hello(1))
    await a.until(lambda: a.ticks[first] != "clock", why="✓ for hello 1")
    await b.until(lambda: shown_by_b(hello(1)), why="hello 1 shown")
    log("step: sent, received, decrypted")

    await b.go_offline()
    later = [a.send_text(bu, hello(k)) for k in (2, 3)]
    await a.until(lambda: all(a.ticks[i] != "clock" for i in later), why="✓ while offline")
    b.start()
    await b.until(lambda: shown_by_b(hello(3)), why="the backlog drained")
    texts = [t for _, t in b.shown]
    mine = [t for t in texts if t.endswith(f"({tag})")]
    assert mine[:3] == [hello(1), hello(2), hello(3)], texts
    log("step: reconnected and drained the inbox in order")

    # Withhold acks: the entry stays in the inbox and comes again with the next drain, and
    # must be shown once.
    b.hold_acks = True
    fourth = a.send_text(bu, hello(4))
    await b.until(lambda: shown_by_b(hello(4)), why="hello 4 shown")
    await b.go_offline()
    b.hold_acks = False
    dups, drains = b.duplicates, b.drained
    b.start()
    await b.until(lambda: b.drained > drains, why="drain after reconnect")
    await b.until(lambda: b.duplicates > dups, why="the unacked copy came again")
    assert [t for _, t in b.shown].count(hello(4)) == 1, b.shown
    log("step: the unacked copy came again and was shown once (dedup)")

    # Acked this time: once the acks have reached storage (they are not answered; a drain that
    # overtakes them may hand an entry out again, which dedup absorbs), the inbox has nothing
    # more (a live push retried before the ack reached the shard may still come; a drain may
    # not).
    await asyncio.sleep(1.0)
    await b.go_offline()
    from_inbox, drains = b.inbox_deliveries, b.drained
    b.start()
    await b.until(lambda: b.drained > drains, why="drain after the acks")
    assert b.inbox_deliveries == from_inbox, "an acked entry was drained again"
    log("step: acked entries are gone from the inbox")

    reply = b.send_text(a.me[0], f"reply from b ({tag})")
    await a.until(lambda: any(t == f"reply from b ({tag})" for _, t in a.shown), why="reply shown")
    await b.until(lambda: b.ticks[reply] != "clock", why="✓ for the reply")
    await a.until(lambda: a.ticks[fourth] in ("delivered", "read"), why="✓✓ for hello 4")
    log("step: replies go both ways; receipts reach the sender")

    if args.rust_peer is not None:
        other = int(args.rust_peer.lstrip("u"))
        a.send_text(other, "from python")
        await a.until(
            lambda: any(t == "from rust" for d, t in a.shown if d[0] == other),
            timeout=30,
            why="the Rust client's text",
        )
        log("step: a text from the Rust client opened here")

    await a.go_offline()
    await b.go_offline()
    log("selftest: ok")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("selftest", help="two devices through a running chatsim serve")
    t.add_argument("--me", required=True, help="`chatsim keys u0` output")
    t.add_argument("--peer", required=True, help="`chatsim keys u1` output")
    t.add_argument("--state", required=True, help="folder for the devices' id counters")
    t.add_argument("--rust-peer", help="a user running `chatsim client` that sends 'from rust'")
    args = p.parse_args()
    try:
        return asyncio.run(asyncio.wait_for(selftest(args), 120))
    except (AssertionError, TimeoutError, asyncio.TimeoutError) as e:
        print(f"selftest: FAILED: {e!r}", flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
