"""Print the packages whose versions differ between two pip freeze files (lock -> new).

Usage: python scripts/lock_diff.py OLD NEW   (a missing OLD counts as empty)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def read_pins(path: Path) -> dict[str, str]:
    """name (normalized as pip does) -> version, from `name==version` lines."""
    if not path.is_file():
        return {}
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def main(old_path: str, new_path: str) -> None:
    old, new = read_pins(Path(old_path)), read_pins(Path(new_path))
    changes = [
        f"  {name}: {old.get(name, '-')} -> {new.get(name, '-')}"
        for name in sorted(old.keys() | new.keys())
        if old.get(name) != new.get(name)
    ]
    print("\n".join(changes) if changes else "  none: the lock already holds the newest versions")


if __name__ == "__main__":
    main(*sys.argv[1:3])
