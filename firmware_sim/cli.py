"""`possim firmware list | show VERSION | build VERSION --out FILE | verify FILE`: profiles and test images.

`list --json` is a stable contract: a JSON array of objects with at least `version`, `sha256`, `signed`
(bool) and `defects` (list of str), one per shipped profile, oldest first. Images are the deterministic
ones signed with the built-in TEST vendor key (see firmware_sim/image.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("firmware", help="firmware profiles and test images")
    sub = parser.add_subparsers(dest="firmware_command", metavar="list|show|build|verify")
    listing = sub.add_parser("list", help="the shipped profiles and their images")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=run_list)
    show = sub.add_parser("show", help="one profile and its image")
    show.add_argument("version")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)
    build = sub.add_parser("build", help="write a test image (signed with the built-in TEST vendor key by default)")
    build.add_argument("version")
    build.add_argument("--out", required=True)
    build.add_argument("--size", type=int, default=8192, help="payload bytes (default 8192)")
    build.add_argument("--seed", default="possim", help="seed of the deterministic payload")
    build.add_argument("--unsigned", action="store_true", help="no signature (terminals must refuse it)")
    build.add_argument("--key", help="Ed25519 private key file (raw 32 bytes, 64 hex digits or PEM) instead of "
                                     "the test key")
    build.add_argument("--json", action="store_true")
    build.set_defaults(handler=run_build)
    check = sub.add_parser("verify", help="check an image file's size, hash and signature")
    check.add_argument("file")
    check.add_argument("--pubkey", help="Ed25519 public key file (raw, hex or PEM); default: the test vendor key")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=run_verify)
    parser.set_defaults(handler=lambda args: (parser.print_help(sys.stderr), EXIT_USAGE)[1])


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"possim firmware: {message}", file=sys.stderr)
    return code


def describe(version: str) -> dict[str, Any]:
    """One version as `list` / `show` print it (ValueError for a malformed version)."""
    from .profiles import DEFECTS, get_profile
    from .repository import shipped_image

    profile = get_profile(version)
    image = shipped_image(version)
    return {"version": version, "known": profile.known, "released": profile.released,
            "build_date": image.build_date, "size": image.size, "sha256": image.sha256, "signed": image.signed,
            "defects": list(profile.defects), "defect_effects": {d: DEFECTS[d] for d in profile.defects},
            "capabilities": list(profile.capabilities), "notes": profile.notes}


def run_list(args: argparse.Namespace) -> int:
    from .profiles import shipped_versions

    items = [describe(v) for v in shipped_versions()]
    if args.json:
        print(json.dumps(items))
        return EXIT_OK
    for item in items:
        defects = ", ".join(item["defects"]) or "none"
        print(f"{item['version']:<8} {item['build_date']}  sha256 {item['sha256'][:16]}...  "
              f"{'signed' if item['signed'] else 'UNSIGNED'}  defects: {defects}")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    try:
        item = describe(args.version)
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(item))
        return EXIT_OK
    print(f"firmware {item['version']}{'' if item['known'] else ' (no profile: treated as good)'}")
    print(f"  released     {item['released']}")
    print(f"  image        {item['size']} bytes, sha256 {item['sha256']}, {'signed' if item['signed'] else 'UNSIGNED'}")
    print(f"  capabilities {', '.join(item['capabilities'])}")
    for defect, effect in item["defect_effects"].items() or [("none", "")]:
        print(f"  defect       {defect}{': ' + effect if effect else ''}")
    if item["notes"]:
        print(f"  notes        {item['notes']}")
    return EXIT_OK


def run_build(args: argparse.Namespace) -> int:
    from .image import FirmwareError, build_image, load_private_key

    try:
        key = load_private_key(args.key) if args.key else None
    except OSError as exc:
        return _fail(f"--key {args.key}: {exc.strerror or exc}")
    except (ValueError, FirmwareError) as exc:  # the key file's content: the message names the file
        return _fail(str(exc))
    try:
        image = build_image(args.version, size=args.size, signing_key=key, signed=not args.unsigned, seed=args.seed)
    except (OSError, ValueError, FirmwareError) as exc:
        return _fail(str(exc))
    try:
        Path(args.out).write_bytes(image.to_bytes())
    except OSError as exc:  # a missing folder, a directory, no permission: name it, no traceback
        return _fail(f"--out {args.out}: cannot write: {exc.strerror or exc}")
    if args.json:
        print(json.dumps({"file": args.out, **image.describe()}))
    else:
        print(f"wrote {args.out}: {image.version}, {image.size} bytes, sha256 {image.sha256}, "
              f"{'signed' if image.signed else 'UNSIGNED'}")
    return EXIT_OK


def run_verify(args: argparse.Namespace) -> int:
    from .image import FirmwareError, Image, load_public_key, verify

    try:
        key = load_public_key(args.pubkey) if args.pubkey else None
        image = Image.load(args.file)
    except (OSError, ValueError) as exc:
        return _fail(str(exc))
    except FirmwareError as exc:
        error: FirmwareError | None = exc
        image = None
    else:
        try:
            verify(image, key)
            error = None
        except FirmwareError as exc:
            error = exc
    result = {"file": args.file, "ok": error is None, "check": error.check if error else None,
              "error": str(error) if error else None, **(image.describe() if image else {})}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.file}: {'OK' if error is None else 'REFUSED: ' + str(error)}")
    return EXIT_OK if error is None else EXIT_FAILED
