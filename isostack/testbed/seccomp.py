"""A seccomp user-notification "slow path": every listed syscall is parked in a supervisor that
waits ``delay_ms`` and then lets it continue - the same detour a gVisor Sentry or a USER_NOTIF
policy adds (spec: the sandbox's syscall slow path, L-4).

No libseccomp: the classic-BPF filter is five instructions, built here, installed with the
``seccomp(2)`` system call through ctypes. x86_64 only (the syscall numbers and audit arch below).
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import struct
import sys
import time

SYSCALL_NR = {"connect": 42, "accept": 43, "accept4": 288, "sendto": 44, "recvfrom": 45, "write": 1,
              "read": 0, "pwrite64": 18, "pread64": 17, "openat": 257}
_NR_SECCOMP = 317
_AUDIT_ARCH_X86_64 = 0xC000003E
_SECCOMP_SET_MODE_FILTER = 1
_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3
_RET_ALLOW = 0x7FFF0000
_RET_USER_NOTIF = 0x7FC00000
_RET_KILL_PROCESS = 0x80000000
_PR_SET_NO_NEW_PRIVS = 38
# ioctl numbers: _IOWR('!', 0, struct seccomp_notif[80 bytes]) and _IOWR('!', 1, resp[24 bytes])
_NOTIF_RECV = 0xC0502100
_NOTIF_SEND = 0xC0182101
_FLAG_CONTINUE = 1
# BPF opcodes
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_RET_K = 0x06


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def supported() -> bool:
    return platform.machine() == "x86_64" and sys.platform == "linux"


def _program(numbers: list[int]) -> list[tuple[int, int, int, int]]:
    prog = [(_LD_W_ABS, 0, 0, 4), (_JEQ_K, 1, 0, _AUDIT_ARCH_X86_64), (_RET_K, 0, 0, _RET_KILL_PROCESS),
            (_LD_W_ABS, 0, 0, 0)]
    n = len(numbers)
    for i, nr in enumerate(numbers):
        # match -> jump to the USER_NOTIF return (after the remaining compares and the ALLOW)
        prog.append((_JEQ_K, n - i, 0, nr))
    prog.append((_RET_K, 0, 0, _RET_ALLOW))
    prog.append((_RET_K, 0, 0, _RET_USER_NOTIF))
    return prog


def install_slow_path(syscalls: list[str], delay_ms: float) -> int:
    """Fork a supervisor, then filter the CALLING process: returns the supervisor's pid.

    Must run before the process starts any thread (a filter only covers the calling thread and the
    threads it creates afterwards).
    """
    numbers = [SYSCALL_NR[s] for s in syscalls]
    parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the supervisor: unfiltered, receives the listener fd
        parent_end.close()
        try:
            _, fds, _, _ = socket.recv_fds(child_end, 16, 1)
            _supervise(fds[0], delay_ms / 1000.0)
        finally:
            os._exit(0)
    child_end.close()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    insns = _program(numbers)
    arr = (_SockFilter * len(insns))(*[_SockFilter(c, jt, jf, k) for c, jt, jf, k in insns])
    fprog = _SockFprog(len(insns), arr)
    fd = libc.syscall(_NR_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_NEW_LISTENER, ctypes.byref(fprog))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "seccomp(SET_MODE_FILTER, NEW_LISTENER)")
    socket.send_fds(parent_end, [b"x"], [fd])
    os.close(fd)
    parent_end.close()
    return pid


def _supervise(listener: int, delay_s: float) -> None:
    import fcntl

    req = bytearray(80)
    while True:
        req[:] = bytes(80)
        try:
            fcntl.ioctl(listener, _NOTIF_RECV, req, True)
        except InterruptedError:
            continue
        except OSError:
            return  # the filtered process is gone (ENOENT) or the fd closed
        (notif_id,) = struct.unpack_from("<Q", req, 0)
        time.sleep(delay_s)
        resp = bytearray(struct.pack("<QqiI", notif_id, 0, 0, _FLAG_CONTINUE))
        try:
            fcntl.ioctl(listener, _NOTIF_SEND, resp, True)
        except OSError:
            continue  # the syscall was interrupted meanwhile: nothing to answer
