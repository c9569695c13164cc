"""Keeping the gateway's listener unreachable from other hosts, although QuickFIX binds 0.0.0.0.

QuickFIX 1.16 binds its acceptor to INADDR_ANY and has no setting for an
accept address, so "bind 127.0.0.1" is not available. What is: a classic BPF
socket filter on the listening socket. The kernel runs it on every packet
addressed to the listener before the TCP handshake completes, so a SYN
from an address not on the list is dropped and the peer sees a connect
timeout, exactly as behind a firewall that drops. The filter is attached
right after the engine starts listening; a peer that raced into that
instant still meets QuickFIX's own per-session `AllowedRemoteAddresses`
check at logon, which uses the same list.

The allowed sources are the union of the client sessions' allowed remote
addresses (IPv4; QuickFIX has no IPv6 listener). Loopback-only is the
default, and a config asking for anything else must say so explicitly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import os
import socket
import struct

from knightwatch.gateway.engine import GatewayError

SO_ATTACH_FILTER = 26
_SKF_NET_OFF = -0x100000
_LD_W_ABS = 0x00 | 0x00 | 0x20
_JEQ_K = 0x05 | 0x10 | 0x00
_RET_K = 0x06 | 0x00
_SRC_ADDR = 12  # offset of the source address in the IPv4 header


class ContainmentError(GatewayError):
    """The listener could not be restricted; the gateway refuses to serve unrestricted."""


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def source_filter(allowed: list[str]) -> bytes:
    """A BPF program accepting packets whose IPv4 source is one of `allowed`, dropping the rest."""
    addrs: list[int] = []
    for text in allowed:
        try:
            addrs.append(int(ipaddress.IPv4Address(text)))
        except ValueError:
            raise ContainmentError(
                f"allowed_remote_addresses: {text!r} is not an IPv4 address"
            ) from None
    if not addrs or len(addrs) > 200:
        raise ContainmentError("allowed_remote_addresses: must list 1..200 addresses")
    n = len(addrs)
    prog = [_ins(_LD_W_ABS, 0, 0, _SKF_NET_OFF + _SRC_ADDR)]
    for i, a in enumerate(addrs):
        # on a match jump to the accept at the end; otherwise fall through to the next test
        prog.append(_ins(_JEQ_K, n - i, 0, a))
    prog.append(_ins(_RET_K, 0, 0, 0))  # drop
    prog.append(_ins(_RET_K, 0, 0, 0xFFFFFFFF))  # accept
    return b"".join(prog)


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on TCP `port` (IPv4), from /proc/net/tcp."""
    inodes: set[str] = set()
    with open("/proc/net/tcp", encoding="ascii") as f:
        next(f)
        for line in f:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                inodes.add(inode)
    return inodes


def listening_fds(port: int) -> list[int]:
    """File descriptors of this process listening on TCP `port` (IPv4).

    Found by inode (/proc/net/tcp against the /proc/self/fd links), so no other
    descriptor of the process (the engine's files, pipes) is ever touched.
    """
    wanted = {f"socket:[{i}]" for i in _listening_inodes(port)}
    found: list[int] = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") in wanted:
                found.append(int(name))
        except OSError:
            continue  # closed meanwhile
    return found


def restrict_listener(port: int, allowed: list[str]) -> int:
    """Attach the source filter to every listener of this process on `port`; returns how many.

    Raises ContainmentError when there is no listener or the kernel refuses the
    filter: the caller must then stop serving rather than serve unrestricted.
    """
    program = source_filter(allowed)
    fds = listening_fds(port)
    if not fds:
        raise ContainmentError(f"no listening socket on port {port} to restrict")
    buf = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(buf))
    for fd in fds:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, fileno=os.dup(fd))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError as exc:
            raise ContainmentError(
                f"cannot attach the source-address filter to port {port} ({exc})"
            ) from None
        finally:
            with contextlib.suppress(OSError):
                s.close()
    return len(fds)
