"""Every path the studio opens lies inside its root folder.

A path from a request is taken relative to the root (an absolute one must already be inside it),
then resolved — `..` and symlinks followed — and refused unless the result is still the root or
below it. So `../../etc/passwd`, `/etc/passwd` and a symlink pointing out of the root are all
refused, with the path named in the error.
"""

from __future__ import annotations

from pathlib import Path


class OutsideRoot(ValueError):
    """A requested path resolves outside the studio's root folder."""


def inside(root: Path, requested: str | None) -> Path:
    """The resolved path for ``requested`` (relative to ``root``, or absolute inside it)."""
    if requested is None or requested.strip() == "":
        return root
    if "\x00" in requested:
        raise OutsideRoot(f"{requested!r} is not a path")
    candidate = Path(requested)
    resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
    if resolved != root and root not in resolved.parents:
        raise OutsideRoot(f"{requested} is outside the studio's folder {root}")
    return resolved


def relative(root: Path, path: Path) -> str:
    """How the studio shows a path: relative to the root."""
    try:
        return str(path.resolve().relative_to(root)) or "."
    except ValueError:
        return str(path)
