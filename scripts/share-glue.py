#!/usr/bin/env python3
"""Lets two wasm-bindgen builds of the same crate share one JS glue.

The portable and the simd128 builds (scripts/build-pkg.sh, scripts/build-web.sh)
come from the same sources, so wasm-bindgen writes the same glue for both, except
for Rust's symbol hashes (`..._invoke__h1295e4709abe3fc4`): the simd128 build
enables other dependency features (blake3's `wasm32_simd`), which changes the
crates' metadata and so the hashes of the exported closure shims.

    share-glue.py REF_GLUE OTHER_GLUE OTHER_WASM OUT_WASM [REF_FILE OTHER_FILE]...

checks that OTHER_GLUE equals REF_GLUE once every symbol hash of OTHER is replaced
by the hash at the same place in REF (a consistent one-to-one mapping; the same
for each further pair of files, e.g. the .d.ts), comments' closure shim indices
aside (`shim_idx: N`: function indices, only named in comments), renames OTHER_WASM's import and
export names with that mapping into OUT_WASM, and checks that OUT_WASM then has
exactly REF's import and export names (REF's wasm is REF_GLUE with `.js` replaced
by `_bg.wasm`). REF_GLUE then loads OUT_WASM as well as its own module. Exits 1,
writing nothing, when any check fails.
"""

import re
import sys
from pathlib import Path

HASH = re.compile(rb"h[0-9a-f]{16}")
# wasm-bindgen's comments name each closure cast's shim by its function index
# (`// Cast intrinsic for `Closure(... shim_idx: 144 ...)``), which differs between
# the builds; only in comments is it ignored.
SHIM_IDX = re.compile(rb"shim_idx: [0-9]+")


def without_comment_indices(text):
    lines = text.split(b"\n")
    return b"\n".join(SHIM_IDX.sub(b"shim_idx: _", l) if l.lstrip().startswith(b"//") else l for l in lines)


def fail(msg):
    print(f"share-glue: {msg}", file=sys.stderr)
    sys.exit(1)


def hash_mapping(ref, other, mapping, what):
    """Extends `mapping` (other hash -> ref hash) so that `other` becomes `ref`."""
    ref, other = without_comment_indices(ref), without_comment_indices(other)
    ref_parts, other_parts = HASH.split(ref), HASH.split(other)
    if ref_parts != other_parts:
        fail(f"{what}: the two builds differ in more than symbol hashes")
    for r, o in zip(HASH.findall(ref), HASH.findall(other)):
        if mapping.setdefault(o, r) != r:
            fail(f"{what}: hash {o.decode()} maps to two hashes")
    if len(set(mapping.values())) != len(mapping):
        fail(f"{what}: two hashes map to one")


def leb(data, pos):
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return value, pos


def enc_leb(value):
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def name(data, pos):
    n, pos = leb(data, pos)
    return data[pos : pos + n], pos + n


def sections(wasm):
    if wasm[:8] != b"\0asm\1\0\0\0":
        fail("not a wasm module (version 1)")
    pos = 8
    while pos < len(wasm):
        sid = wasm[pos]
        size, start = leb(wasm, pos + 1)
        yield sid, wasm[start : start + size]
        pos = start + size


def limits(data, pos):
    flags = data[pos]
    _, pos = leb(data, pos + 1)
    if flags & 1:
        _, pos = leb(data, pos)
    return pos


def rename_imports(payload, ren):
    """The import section with names renamed, and its (module, name) list."""
    count, pos = leb(payload, 0)
    out, names = bytearray(enc_leb(count)), []
    for _ in range(count):
        module, pos = name(payload, pos)
        field, pos = name(payload, pos)
        start = pos
        kind = payload[pos]
        pos += 1
        if kind == 0:  # function: type index
            _, pos = leb(payload, pos)
        elif kind == 1:  # table: reference type, limits
            pos = limits(payload, pos + 1)
        elif kind == 2:  # memory: limits
            pos = limits(payload, pos)
        elif kind == 3:  # global: value type, mutability
            pos += 2
        elif kind == 4:  # tag: attribute, type index
            _, pos = leb(payload, pos + 1)
        else:
            fail(f"unknown import kind {kind}")
        module, field = ren(module), ren(field)
        names.append((module, field))
        out += enc_leb(len(module)) + module + enc_leb(len(field)) + field + payload[start:pos]
    return bytes(out), names


def rename_exports(payload, ren):
    count, pos = leb(payload, 0)
    out, names = bytearray(enc_leb(count)), []
    for _ in range(count):
        field, pos = name(payload, pos)
        start = pos
        _, pos = leb(payload, pos + 1)  # kind, index
        field = ren(field)
        names.append(field)
        out += enc_leb(len(field)) + field + payload[start:pos]
    return bytes(out), names


def interface(wasm, ren=lambda s: s):
    """(the module with names renamed, its import names, its export names)."""
    out, imports, exports = bytearray(wasm[:8]), [], []
    for sid, payload in sections(wasm):
        if sid == 2:
            payload, imports = rename_imports(payload, ren)
        elif sid == 7:
            payload, exports = rename_exports(payload, ren)
        out += bytes([sid]) + enc_leb(len(payload)) + payload
    return bytes(out), sorted(imports), sorted(exports)


def main(argv):
    if len(argv) < 4 or len(argv) % 2:
        fail("usage: share-glue.py REF_GLUE OTHER_GLUE OTHER_WASM OUT_WASM [REF_FILE OTHER_FILE]...")
    ref_glue, other_glue, other_wasm, out_wasm = map(Path, argv[:4])
    mapping = {}
    pairs = [(ref_glue, other_glue)] + [(Path(a), Path(b)) for a, b in zip(argv[4::2], argv[5::2])]
    for a, b in pairs:
        hash_mapping(a.read_bytes(), b.read_bytes(), mapping, b.name)
    ren = lambda s: HASH.sub(lambda m: mapping.get(m.group(0), m.group(0)), s)
    renamed, imports, exports = interface(other_wasm.read_bytes(), ren)
    ref_wasm = ref_glue.with_name(ref_glue.name[: -len(".js")] + "_bg.wasm")
    _, ref_imports, ref_exports = interface(ref_wasm.read_bytes())
    if imports != ref_imports:
        fail(f"{other_wasm.name}: imports differ from {ref_wasm.name}'s after renaming")
    if exports != ref_exports:
        fail(f"{other_wasm.name}: exports differ from {ref_wasm.name}'s after renaming")
    out_wasm.write_bytes(renamed)


if __name__ == "__main__":
    main(sys.argv[1:])
