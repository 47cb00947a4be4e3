"""`spawn bundle`: the agent bundle this installation puts on instances (show, build, write)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any, TextIO

from controller.output import Output, add_json_flag

EPILOG = """examples:
  spawn bundle                       # the cached bundle: path, sha256, size, contents
  spawn bundle build --force         # rebuild it (pip downloads the locked wheels again)
  spawn bundle write spored.tar.gz   # write it to a file, to launch where no index is reachable:
  spawn launch -t t3.micro --ttl 2h --agent-bundle spored.tar.gz
"""

def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "bundle", help="show, build or write the agent bundle launched instances install",
        description="The agent bundle: spored and its pure-Python dependencies, built by pip from "
                    "the package index you already use, once per spawn version, and cached under "
                    "$XDG_CACHE_HOME/spawn/bundles (default ~/.cache/spawn/bundles).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_flag(parser)
    parser.set_defaults(func=cmd_show)
    sub = parser.add_subparsers(dest="bundle_command", metavar="SUBCOMMAND")

    p = sub.add_parser("show", help="show the cached bundle (the default)",
                       description="Show the cached bundle: path, sha256, size and contents; "
                                   "exit 0 with cached=false when none is cached yet.",
                       epilog="examples:\n  spawn bundle show\n  spawn bundle show --json\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_json_flag(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("build", help="build the bundle into the cache (reused when present)",
                       description="Build the bundle into the cache with pip; reuse the cached "
                                   "one unless --force.",
                       epilog="examples:\n  spawn bundle build\n  spawn bundle build --force --json\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--force", action="store_true", help="rebuild even when a bundle is cached")
    add_json_flag(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("write", help="write the bundle to FILE (for --agent-bundle FILE)",
                       description="Write the bundle to FILE (building it first when needed), to "
                                   "carry to a machine that can't reach a package index and launch "
                                   "there with --agent-bundle FILE.",
                       epilog="examples:\n  spawn bundle write spored.tar.gz\n"
                              "  spawn launch -t t3.micro --agent-bundle spored.tar.gz\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", type=Path, help="where to write the bundle (.tar.gz)")
    add_json_flag(p)
    p.set_defaults(func=cmd_write)


def _progress(out: Output) -> Any:
    return out.info


def _human(info: dict[str, Any]) -> Any:
    def render(stream: TextIO) -> None:
        b = info["bundle"]
        if b is None:
            stream.write(f"no bundle cached in {info['cache_dir']}; `spawn bundle build` (or the "
                         "first `spawn launch`) builds one\n")
            return
        stream.write(f"path     {b['path']}\nsha256   {b['sha256']}\nversion  {b['version']}\n"
                     f"size     {b['size']} bytes\ncontents\n")
        for name in b["contents"]:
            stream.write(f"  {name}\n")
    return render


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    from controller import bundle

    cache = bundle.default_cache_dir()
    found = bundle.cached_bundle(cache)
    info = {"cached": found is not None, "cache_dir": str(cache),
            "bundle": bundle.describe(found) if found else None}
    out.result(info, _human(info))
    return 0


def cmd_build(args: argparse.Namespace, out: Output) -> int:
    from controller import bundle

    cache = bundle.default_cache_dir()
    built = bundle.ensure_bundle(cache_dir=cache, force=args.force, progress=_progress(out))
    info = {"cached": True, "cache_dir": str(cache), "bundle": bundle.describe(built)}
    out.result(info, _human(info))
    return 0


def cmd_write(args: argparse.Namespace, out: Output) -> int:
    from controller import bundle

    target: Path = args.file
    if target.is_dir():
        from spored.errors import ValidationError

        raise ValidationError("FILE", f"{str(target)!r} is a directory; accepted: a file path such as "
                                      "spored.tar.gz")
    built = bundle.ensure_bundle(progress=_progress(out))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built.path, target)
    info = {"file": str(target), "sha256": built.sha256, "size": built.size, "version": built.version}
    def human(stream: TextIO) -> None:
        stream.write(f"{built.sha256}  {target}\n")

    out.result(info, human)
    return 0
