"""Refuses a wheel whose extension needs a C library function it cannot bind
to by version.

auditwheel judges the wheel by the versioned symbols it imports. A function
that the glibc the wheel was linked against (2.17) did not have yet, such as
``close_range``, is imported without a version instead: the extension then
loads on a new glibc and fails to import on an old one with "undefined
symbol". This check lists every such strong, unversioned import that is not
the Python C API (which the interpreter provides) and fails if there is one.

Usage: wheel_symbols.py WHEEL
"""

from __future__ import annotations

import io
import sys
import zipfile

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

PYTHON_API = ("Py", "_Py")


def unversioned_imports(data: bytes) -> list[str]:
    elf = ELFFile(io.BytesIO(data))
    dynsym = elf.get_section_by_name(".dynsym")
    versym = elf.get_section_by_name(".gnu.version")
    if not isinstance(dynsym, SymbolTableSection):
        return []
    found = []
    for index, symbol in enumerate(dynsym.iter_symbols()):
        if symbol["st_shndx"] != "SHN_UNDEF" or not symbol.name:
            continue
        if symbol["st_info"]["bind"] == "STB_WEAK" or symbol.name.startswith(PYTHON_API):
            continue
        # Index 0 (local) and 1 (global) are the two "no version" values.
        ndx = versym.get_symbol(index)["ndx"] if versym is not None else "VER_NDX_GLOBAL"
        if ndx in ("VER_NDX_LOCAL", "VER_NDX_GLOBAL", 0, 1):
            found.append(symbol.name)
    return sorted(found)


def main(wheel: str) -> int:
    bad = 0
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if not name.endswith(".so"):
                continue
            symbols = unversioned_imports(archive.read(name))
            for symbol in symbols:
                print(f"{name}: imports {symbol} without a version", file=sys.stderr)
            bad += len(symbols)
            if not symbols:
                print(f"{name}: every C library import is versioned")
    return 1 if bad else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
