"""`kvmpod image fetch|list|rm|gc`: the image store (store.py) from the command line, as rkt's
`rkt fetch`, `rkt image list`, `rkt image rm` and `rkt image gc` did.

    kvmpod image fetch IMAGE...            into the store without running it; prints each digest
    kvmpod image list [--full]             NAME, DIGEST, SIZE, LAST USE
    kvmpod image rm DIGEST|NAME...         never an image a running pod was made from
    kvmpod image gc [--older-than AGE]     every image not used for AGE (default 24h, rkt's grace
                                           period) that no running pod was made from

Which pods run is the pods room's knowledge: the caller passes `in_use` (pod_commands.py).
"""

import argparse
import sys
import time
from collections.abc import Callable

from ...pod.problems import InvalidInput, Problem
from .store import Entry, fetch, human_size, images_dir, remove_entry, stored_images

DEFAULT_GC_AGE = "24h"


def register(sub) -> None:
    """The `image` subcommand and its actions, on the CLI's subparsers."""
    image = sub.add_parser("image", help="the image store: fetch, list, rm, gc (OCI layouts and archives, "
                                         "docker-archives)")
    actions = image.add_subparsers(dest="image_action", required=True, parser_class=type(image),
                                   metavar="{fetch,list,rm,gc}")
    fetch_parser = actions.add_parser("fetch", help="unpack images into the store without running them; prints "
                                                    "each digest")
    fetch_parser.add_argument("images", nargs="+", metavar="IMAGE",
                              help="oci:PATH[:REF], oci-archive:PATH[:REF] or docker-archive:PATH[:REPO:TAG]")
    list_parser = actions.add_parser("list", help="the images in the store")
    list_parser.add_argument("--full", action="store_true", help="whole digests (default: sha256: and 12 digits)")
    rm_parser = actions.add_parser("rm", help="remove images from the store (never one a running pod uses)")
    rm_parser.add_argument("images", nargs="+", metavar="DIGEST|NAME")
    gc_parser = actions.add_parser("gc", help="remove images unused for a while that no running pod uses")
    gc_parser.add_argument("--older-than", default=DEFAULT_GC_AGE,
                           help=f"only images last used this long ago (90s, 30m, 2h, 7d; default {DEFAULT_GC_AGE})")


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else "-"


def _short(digest: str, full: bool) -> str:
    return digest if full else digest[:19]


def _list(full: bool) -> str:
    rows = [("NAME", "DIGEST", "SIZE", "LAST USE")]
    for entry in sorted(stored_images(), key=lambda e: (e.name, e.digest)):
        rows.append((",".join(entry.names), _short(entry.digest, full), human_size(entry.size), _when(entry.last_used)))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}\n" for r in rows)


def find_entries(word: str, entries: list[Entry]) -> list[Entry]:
    """The entries a DIGEST (whole, sha256-…, or a prefix of 4 hex digits or more) or NAME names."""
    digest = word.replace("sha256-", "sha256:", 1)
    if not digest.startswith("sha256:") and len(word) >= 4 and all(c in "0123456789abcdef" for c in word):
        digest = "sha256:" + word
    if digest.startswith("sha256:") and len(digest) > len("sha256:"):
        by_digest = [e for e in entries if e.digest.startswith(digest)]
        if by_digest:
            return by_digest
    return [e for e in entries if word in e.names]


def _rm(words: list[str], in_use: dict[str, list[str]]) -> str:
    entries = stored_images()
    chosen: list[Entry] = []
    problems = []
    for word in words:
        found = find_entries(word, entries)
        if not found:
            problems.append(Problem("DIGEST|NAME", f"{word!r}: no such image in {images_dir()}; see kvmpod image list"))
        elif len(found) > 1:
            problems.append(Problem("DIGEST|NAME", f"{word!r} names {len(found)} images ("
                                    + ", ".join(e.digest for e in found) + "); give the digest"))
        elif found[0].digest in in_use:
            pods = ", ".join(p.rstrip("/").rsplit("/", 1)[-1] for p in in_use[found[0].digest])
            problems.append(Problem("DIGEST|NAME", f"{word!r} is used by running pod {pods}; stop it first "
                                                   f"(kvmpod stop)"))
        elif found[0] not in chosen:
            chosen.append(found[0])
    if problems:
        raise InvalidInput(problems)
    for entry in chosen:
        remove_entry(entry)
    return "".join(f"removed {e.digest} ({e.name})\n" for e in chosen)


def gc_images(older_than: float, in_use: dict[str, list[str]], now: float | None = None) -> tuple[list[Entry], list[Entry]]:
    """(removed, kept because a running pod uses them)."""
    now = time.time() if now is None else now
    removed, kept = [], []
    for entry in stored_images():
        if entry.digest in in_use:
            kept.append(entry)
        elif now - (entry.last_used or 0) >= older_than:
            remove_entry(entry)
            removed.append(entry)
    return removed, kept


def image_command(opts: argparse.Namespace, in_use: Callable[[], dict[str, list[str]]],
                  parse_duration: Callable[[str], float]) -> str | int:
    action = opts.image_action
    if action == "fetch":
        digests = []
        for word in opts.images:
            stored = fetch(word, lambda text: sys.stderr.write(f"kvmpod: {text}\n"))
            digests.append(stored.digest)
            sys.stdout.write(stored.digest + "\n")
            sys.stdout.flush()
        return 0
    if action == "list":
        return _list(opts.full)
    if action == "rm":
        return _rm(opts.images, in_use())
    try:
        older = parse_duration(opts.older_than)
    except ValueError:
        raise InvalidInput([Problem("--older-than", f"{opts.older_than!r} is not an age; give e.g. 90s, 30m, 2h, 7d"
                                    )]) from None
    removed, kept = gc_images(older, in_use())
    return ("".join(f"removed {e.digest} ({e.name})\n" for e in removed)
            + "".join(f"kept {e.digest} ({e.name}): a running pod uses it\n" for e in kept))
