"""`possim firmware list | show VERSION | build VERSION --out FILE`: the firmware profiles and test images."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("firmware", help="firmware profiles and test images")
    sub = parser.add_subparsers(dest="firmware_command", metavar="list|show|build")
    listing = sub.add_parser("list", help="the shipped profiles")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=run_list)
    show = sub.add_parser("show", help="one profile and its image")
    show.add_argument("version")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=run_show)
    build = sub.add_parser("build", help="write a test image (signed with the built-in test vendor key)")
    build.add_argument("version")
    build.add_argument("--out", required=True)
    build.add_argument("--size", type=int, default=8192)
    build.add_argument("--unsigned", action="store_true", help="no signature (terminals must refuse it)")
    build.add_argument("--key", help="Ed25519 private key, raw 32 bytes (file), instead of the test key")
    build.set_defaults(handler=run_build)
    parser.set_defaults(handler=lambda args: (parser.print_help(sys.stderr), 2)[1])


def _describe(version: str) -> dict[str, Any]:
    from .profiles import get_profile
    from .repository import shipped_image

    profile = get_profile(version)
    image = shipped_image(version)
    return {"version": version, "sha256": image.sha256, "signed": bool(image.signature), "size": image.size,
            "build_date": image.build_date, "defects": list(profile.defects),
            "capabilities": list(profile.capabilities), "notes": profile.notes, "known": profile.known}


def run_list(args: argparse.Namespace) -> int:
    from .profiles import PROFILES, parse_version

    items = [_describe(v) for v in sorted(PROFILES, key=parse_version)]
    if args.json:
        print(json.dumps(items))
    else:
        for item in items:
            defects = ", ".join(item["defects"]) or "none"
            print(f"{item['version']:<8} {item['build_date']}  sha256 {item['sha256'][:16]}...  defects: {defects}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    try:
        item = _describe(args.version)
    except ValueError as exc:
        print(f"possim firmware: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(item, indent=None if args.json else 2))
    return 0


def run_build(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .image import build_image

    key = None
    if args.key:
        raw = Path(args.key).read_bytes()
        if len(raw) != 32:
            print("possim firmware: --key must hold a raw 32-byte Ed25519 private key", file=sys.stderr)
            return 2
        key = Ed25519PrivateKey.from_private_bytes(raw)
    try:
        image = build_image(args.version, size=args.size, signing_key=key, signed=not args.unsigned)
    except ValueError as exc:
        print(f"possim firmware: {exc}", file=sys.stderr)
        return 2
    Path(args.out).write_bytes(image.to_bytes())
    print(f"wrote {args.out}: {image.version}, {image.size} bytes, sha256 {image.sha256}, "
          f"{'signed' if image.signature else 'UNSIGNED'}")
    return 0
