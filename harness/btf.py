"""Struct member offsets from the kernel's own type information (BTF, /sys/kernel/btf/vmlinux).

Probes that read a kernel object (harness/timewait.py reads a timewait socket's ports, addresses
and substate) need the offsets of its members on the running kernel; they change between kernel
versions and configurations. `offset_of(types, "inet_timewait_sock", "__tw_common.skc_num")`
answers from the kernel's BTF, reached through anonymous structs and unions as C does
(`skc_daddr` lives in an anonymous struct inside an anonymous union of `struct sock_common`).
"""

from __future__ import annotations

import struct

from .errors import SocklabError

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD, KIND_TYPEDEF, \
    KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, \
    KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = range(1, 20)
# Bytes that follow the 12-byte common header of a type: fixed, or per vlen entry.
_EXTRA = {KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12),
          KIND_ENUM: (0, 8), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
          KIND_DECL_TAG: (4, 0), KIND_ENUM64: (0, 12)}
_QUALIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BTFError(SocklabError):
    """The kernel's type information is missing, unreadable, or lacks a struct or member we need."""


class Types:
    """The structs and unions of one BTF blob, with their members (name, type id, bit offset)."""

    def __init__(self, data: bytes, where: str = VMLINUX):
        self.where = where
        if len(data) < 24:
            raise BTFError(f"{where}: too short for a BTF header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != MAGIC:
            raise BTFError(f"{where}: not BTF (magic {magic:#x}, expected {MAGIC:#x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self._strings = strings
        self._data = data
        self._found: dict[str, list[int]] = {}
        self._by_off: dict[int, list[int]] = {}      # name offset -> ids of named structs, unions, functions
        self.kinds: list[tuple] = [(0, "", 0, (0, 0, 0))]     # id 0 is void
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        while pos < end:
            name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            kind_flag = info >> 31
            pos += 12
            fixed, per = _EXTRA.get(kind, (0, 0))
            members = (pos, vlen, kind_flag)     # decoded when asked (most types never are)
            pos += fixed + per * vlen
            self.kinds.append((kind, name_off, size_or_type, members))
            if kind in (KIND_STRUCT, KIND_UNION, KIND_FUNC):
                self._by_off.setdefault(name_off, []).append(len(self.kinds) - 1)

    def _named(self, name: str) -> list[int]:
        """Ids of the structs, unions and functions named `name` (the string table is searched, not
        every name decoded)."""
        if name in self._found:
            return self._found[name]
        offs, needle, start = set(), b"\0" + name.encode() + b"\0", 0
        while (i := self._strings.find(needle, start)) >= 0:
            offs.add(i + 1)
            start = i + 1
        self._found[name] = sorted(t for off in offs for t in self._by_off.get(off, ()))
        return self._found[name]

    def _str(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off:end].decode()

    def resolve(self, type_id: int) -> int:
        """The type behind typedefs and qualifiers."""
        while self.kinds[type_id][0] in _QUALIFIERS:
            type_id = self.kinds[type_id][2]
        return type_id

    def struct(self, name: str) -> int:
        """The type id of `struct name` (or union) with members; BTFError when the kernel has none."""
        for tid in self._named(name):
            kind, _, _, (_, vlen, _) = self.kinds[tid]
            if kind in (KIND_STRUCT, KIND_UNION) and vlen:
                return tid
        raise BTFError(f"{self.where}: no struct {name} in the kernel's type information")

    def has_function(self, name: str) -> bool:
        return any(self.kinds[t][0] == KIND_FUNC for t in self._named(name))

    def member(self, type_id: int, name: str) -> tuple[int, int] | None:
        """(byte offset, type id) of member `name` of a struct/union, looking into anonymous members."""
        kind, _, _, (pos, vlen, kind_flag) = self.kinds[self.resolve(type_id)]
        if kind not in (KIND_STRUCT, KIND_UNION):
            return None
        for m_name_off, m_type, m_off in struct.iter_unpack("<III", self._data[pos:pos + 12 * vlen]):
            bit_off = (m_off & 0xFFFFFF) if kind_flag else m_off
            m_name = self._str(m_name_off)
            if m_name == name:
                return bit_off // 8, m_type
            if not m_name:
                inner = self.member(m_type, name)
                if inner is not None:
                    return bit_off // 8 + inner[0], inner[1]
        return None

    def pointee(self, type_id: int) -> int:
        """The type a pointer member points to."""
        tid = self.resolve(type_id)
        if self.kinds[tid][0] != KIND_PTR:
            raise BTFError(f"{self.where}: type {tid} is not a pointer")
        return self.kinds[tid][2]


def offset_of(types: Types, struct_name: str, path: str) -> int:
    """Byte offset of `path` ('a.b.c', members of members, no pointers) in `struct struct_name`."""
    tid, off = types.struct(struct_name), 0
    for part in path.split("."):
        found = types.member(tid, part)
        if found is None:
            raise BTFError(f"{types.where}: struct {struct_name} has no member {path} (at {part!r})")
        off += found[0]
        tid = found[1]
    return off


def member_type(types: Types, struct_name: str, path: str) -> int:
    """The type id of member `path` of `struct struct_name`."""
    tid = types.struct(struct_name)
    for part in path.split("."):
        found = types.member(tid, part)
        if found is None:
            raise BTFError(f"{types.where}: struct {struct_name} has no member {path} (at {part!r})")
        tid = found[1]
    return tid


def load(path: str = VMLINUX) -> Types:
    """The kernel's types; BTFError with the reason when they cannot be read."""
    try:
        with open(path, "rb") as fh:
            return Types(fh.read(), path)
    except OSError as exc:
        raise BTFError(f"{path}: cannot read the kernel's type information: {exc.strerror}") from None
