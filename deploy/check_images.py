"""Refuse a release whose manifests run an image without a digest.

    python deploy/check_images.py deploy          # exit 0: every image is name[:tag]@sha256:<64 hex>
                                                  # exit 1: each image without a digest is named
                                                  # exit 2: the manifests could not be rendered

Renders the kustomization (`kustomize build`, else `kubectl kustomize`) and reads every `image` and
`imageName` field of the result, so an image added anywhere, also outside the `images:` list of
deploy/kustomization.yaml, is checked. The release pipeline runs it after writing the digests and
before `kubectl apply -k deploy/`. Only the standard library and PyYAML.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

DIGESTED = re.compile(r"^[a-z0-9][a-z0-9._/:-]*(?::[\w][\w.-]{0,127})?@sha256:[0-9a-f]{64}$")
IMAGE_FIELDS = ("image", "imageName")


class RenderFailed(Exception):
    """No kustomize could render the folder; the message is the tool's."""


def render(folder: Path) -> str:
    for command in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(command[0]):
            done = subprocess.run([*command, str(folder)], capture_output=True, text=True)
            if done.returncode != 0:
                raise RenderFailed(done.stderr.strip() or f"{' '.join(command)} exited {done.returncode}")
            return done.stdout
    raise RenderFailed("neither kustomize nor kubectl is installed")


def _images(node: object, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in IMAGE_FIELDS and isinstance(value, str):
                yield where, value
            else:
                yield from _images(value, where)
    elif isinstance(node, list):
        for item in node:
            yield from _images(item, where)


def images(manifests: str) -> list[tuple[str, str]]:
    """(kind/name, image) for every image field of the rendered manifests."""
    found = []
    for doc in yaml.safe_load_all(manifests):
        if doc:
            found.extend(_images(doc, f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"))
    return found


def without_digest(manifests: str) -> list[tuple[str, str]]:
    return [(where, image) for where, image in images(manifests) if not DIGESTED.match(image)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python deploy/check_images.py <kustomization folder>", file=sys.stderr)
        return 2
    try:
        manifests = render(Path(args[0]))
    except RenderFailed as e:
        print(f"cannot render {args[0]}: {e}", file=sys.stderr)
        return 2
    missing = without_digest(manifests)
    if not images(manifests):
        print(f"{args[0]} renders no image at all", file=sys.stderr)
        return 2
    if missing:
        print(f"{len(missing)} image reference(s) without a digest (name[:tag]@sha256:<64 hex>); not a release:",
              file=sys.stderr)
        for where, image in missing:
            print(f"  {where}: {image}", file=sys.stderr)
        return 1
    print(f"every image of {args[0]} is pinned by digest ({len(images(manifests))} references)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
