"""Write a pack that gives object NAME the content of FILE (a forgery: git does not check an
object's name against its content when it reads it). For bench/adversarial.py.

    python forge_pack.py GIT_COMMON_DIR NAME FILE
"""

from __future__ import annotations

import hashlib
import struct
import sys
import zlib
from pathlib import Path


def pack_one(name: str, content: bytes) -> tuple[bytes, bytes]:
    """A version-2 pack holding one blob under `name`, and its version-2 index."""
    size, header = len(content), bytearray()
    byte = (3 << 4) | (size & 0x0F)  # type 3: blob
    size >>= 4
    while size:
        header.append(byte | 0x80)
        byte, size = size & 0x7F, size >> 7
    header.append(byte)
    body = b"PACK" + struct.pack(">II", 2, 1) + bytes(header) + zlib.compress(content)
    pack = body + hashlib.sha1(body).digest()
    raw = bytes.fromhex(name)
    fanout = b"".join(struct.pack(">I", 1 if i >= raw[0] else 0) for i in range(256))
    crc = zlib.crc32(bytes(header) + zlib.compress(content)) & 0xFFFFFFFF
    idx = (b"\xfftOc" + struct.pack(">I", 2) + fanout + raw + struct.pack(">I", crc) + struct.pack(">I", 12)
           + hashlib.sha1(body).digest())
    return pack, idx + hashlib.sha1(idx).digest()


def main(common_dir: str, name: str, file: str) -> None:
    pack, idx = pack_one(name, Path(file).read_bytes())
    folder = Path(common_dir) / "objects" / "pack"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"pack-{hashlib.sha1(pack[:-20]).hexdigest()}"
    stem.with_suffix(".pack").write_bytes(pack)
    stem.with_suffix(".idx").write_bytes(idx)


if __name__ == "__main__":
    main(*sys.argv[1:4])
