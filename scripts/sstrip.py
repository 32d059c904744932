#!/usr/bin/env python3
"""Strips an ELF file as OpenWrt's sstrip does: no section header table at
all (e_shoff, e_shnum and e_shstrndx zeroed) and nothing after the last byte
a program header covers. What the loader maps stays: .dynsym, .dynstr, the
dynamic section, .eh_frame_hdr and .eh_frame (PT_GNU_EH_FRAME), notes.

Usage: sstrip.py IN [OUT]   (OUT defaults to IN, rewritten in place)
32- and 64-bit, either byte order.
"""
import struct
import sys


def sstrip(data: bytes) -> bytes:
    if data[:4] != b"\x7fELF":
        raise SystemExit("not an ELF file")
    is64 = data[4] == 2
    end = "<" if data[5] == 1 else ">"
    if is64:
        (phoff,) = struct.unpack_from(end + "Q", data, 0x20)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x36)
        shoff_at, shnum_at = 0x28, 0x3C
    else:
        (phoff,) = struct.unpack_from(end + "I", data, 0x1C)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 0x2A)
        shoff_at, shnum_at = 0x20, 0x30
    last = phoff + phentsize * phnum
    for i in range(phnum):
        at = phoff + i * phentsize
        if is64:
            _type, _flags, offset, _va, _pa, filesz = struct.unpack_from(end + "IIQQQQ", data, at)
        else:
            _type, offset, _va, _pa, filesz = struct.unpack_from(end + "IIIII", data, at)
        last = max(last, offset + filesz)
    out = bytearray(data[:last])
    # No section header table: e_shoff, e_shnum and e_shstrndx are zero.
    struct.pack_into(end + ("Q" if is64 else "I"), out, shoff_at, 0)
    struct.pack_into(end + "HH", out, shnum_at, 0, 0)
    return bytes(out)


def main() -> None:
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    src = sys.argv[1]
    dst = sys.argv[2] if len(sys.argv) == 3 else src
    with open(src, "rb") as f:
        data = f.read()
    out = sstrip(data)
    with open(dst, "wb") as f:
        f.write(out)
    print(f"{dst}: {len(data)} -> {len(out)} bytes, no section headers", file=sys.stderr)


if __name__ == "__main__":
    main()
