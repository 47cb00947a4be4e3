"""The agent bundle the sandbox hands to `spawn launch`: real bytes, a real sha256, built offline.

A real bundle (``controller.bundle``) carries a wheelhouse downloaded for the instance's platform,
which needs the network the first time. The sandbox needs none: it runs the agent as a local
process and never executes the user-data, so it gives launch a smaller tarball built here, from
the agent's sources as installed (``spored/``), the install script and the systemd units when a
checkout has them, and a ``bundle.json`` saying what it is. Launch treats it like any local
``--agent-bundle``: it hashes the file itself, uploads it to the (local) account's bucket and
renders a pre-signed URL plus that sha256 into the user-data.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import spored
from controller import __version__

KIND = "sandbox"
NOTE = ("spawn sandbox: the agent's sources as installed on the machine that ran the sandbox; "
        "not an installable bundle (no wheelhouse). The sandbox runs the agent as a local process.")


def _files() -> dict[str, Path]:
    package = Path(spored.__file__).resolve().parent
    files = {f"spored/{p.relative_to(package).as_posix()}": p
             for p in sorted(package.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    root = package.parent
    extras = {"install.sh": root / "packaging" / "install.sh"}
    extras.update({f"systemd/{p.name}": p for p in sorted((root / "systemd").glob("spored*"))})
    files.update({name: path for name, path in extras.items() if path.is_file()})
    return files


def build(out_dir: Path) -> Path:
    """Write ``out_dir/spored-sandbox-bundle-<version>.tar.gz`` (deterministic) and return it."""
    from controller.bundle import sha256_file, write_tarball

    files = _files()
    manifest = {
        "name": "spored-sandbox-bundle", "kind": KIND, "version": __version__, "note": NOTE,
        "files": {name: sha256_file(path) for name, path in sorted(files.items())},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    top = f"spored-sandbox-bundle-{__version__}"
    target = out_dir / f"{top}.tar.gz"
    with tempfile.TemporaryDirectory(prefix="spawn-sandbox-bundle-") as tmp:
        manifest_path = Path(tmp) / "bundle.json"
        manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                 encoding="utf-8")
        write_tarball({**files, "bundle.json": manifest_path}, target, top=top, epoch=315532800,
                      executables=frozenset({"install.sh"}))
    return target
