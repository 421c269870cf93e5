"""``python -m chorde._speedups``: print which build each module runs (exit 1 if any is pure).

``python -m chorde._speedups --from-wheel WHEEL`` first copies the compiled builds out of a
wheel built from this very source into this copy of chorde (a checkout), so that one compile
serves both the wheel and the checkout (``make test`` does this). A build made from other
sources is refused: it would only be ignored as stale.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import sys
import zipfile

from chorde import _speedups


def _module_of(member: str) -> tuple[str, str] | None:
    """``(module, digest)`` of a wheel member that is a compiled build, else None."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    if not (member.startswith("chorde/_speedups/") and member.endswith(suffix)):
        return None
    parts = member.removesuffix(suffix).split("/")[2:]  # e.g. ["clients", "inproc.<digest>"]
    stem, _, digest = parts[-1].partition(".")
    return ".".join(["chorde", *parts[:-1], stem]), digest


def install_from_wheel(wheel: str) -> list[str]:
    """Copy ``wheel``'s compiled builds next to this chorde's sources; the modules copied."""
    copied: list[str] = []
    with zipfile.ZipFile(wheel) as zf:
        for member in zf.namelist():
            found = _module_of(member)
            if found is None:
                continue
            module, digest = found
            wanted = _speedups.source_digest(_speedups.source_path(module))
            if digest != wanted:
                raise SystemExit(
                    f"{wheel}: its {module} was built from other sources (digest {digest}, "
                    f"these sources give {wanted}); rebuild the wheel"
                )
            target = _speedups.compiled_path(module, digest)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            partial = f"{target}.{os.getpid()}.tmp"
            with zf.open(member) as src, open(partial, "wb") as dst:
                dst.write(src.read())
            os.chmod(partial, 0o755)
            os.replace(partial, target)  # a running process may have the old file mapped
            for old in _speedups._builds(module):
                if os.path.abspath(old) != os.path.abspath(target):
                    os.remove(old)
            copied.append(module)
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chorde._speedups", description=__doc__)
    parser.add_argument("--from-wheel", metavar="WHEEL", help="copy this wheel's builds here")
    args = parser.parse_args(argv)
    if args.from_wheel:
        copied = install_from_wheel(args.from_wheel)
        if not copied:
            raise SystemExit(f"{args.from_wheel} holds no compiled build of chorde")
    status = _speedups.status()
    for module, why in status.items():
        print(f"  {module}: {why}")
    return 0 if all(v == "compiled" for v in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
