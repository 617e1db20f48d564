#!/usr/bin/env python3
"""Pull the uncompressed ELF vmlinux out of a bzImage (/boot/vmlinuz-*).

QEMU boots an ELF vmlinux directly through its PVH entry point; under software emulation
that skips the kernel's own decompression, which costs seconds. The payload is found by
trying each XZ or gzip stream start in the image until one decompresses to an ELF file.
Usage: extract-vmlinux.py BZIMAGE OUTPUT   (exit 1 when no ELF payload was found)
"""
import lzma
import sys
import zlib

MAGICS = (
    (b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
    (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
)


def payload(image):
    for magic, make in MAGICS:
        start = image.find(magic)
        while start >= 0:
            try:
                out = make().decompress(image[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                out = b""
            if out[:4] == b"\x7fELF":
                return out
            start = image.find(magic, start + 1)
    return None


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, dst = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        elf = payload(f.read())
    if elf is None:
        sys.exit(f"extract-vmlinux: no XZ/gzip ELF payload in {src}")
    with open(dst, "wb") as f:
        f.write(elf)
    print(f"extract-vmlinux: {len(elf)} bytes of ELF from {src}")


if __name__ == "__main__":
    main()
