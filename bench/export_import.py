"""Export and import of the people data at scale: the round trip of issue 16 on synthetic
galleries.

Gallery A and gallery B hold the same synthetic photos (same sha256, same boxes) with the
faces grouped under different person ids, as after a reset and a re-upload. Prints the time
and size of A's export, the time of importing it into B (every person recreated, every face
moved), and of importing it again (nothing to do), on the chosen backend.

    python -m bench.export_import [--faces 10000] [--backend embedded|mongomock]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

from bench import synthetic
from services import exchange
from services import people_import
from services.storage import Store
from services.storage import open_store


def gallery(backend: str, folder: str, synth: synthetic.Synthetic) -> Store:
    """A store holding ``synth`` with fresh person ids, and the hash claims an upload makes."""
    store = open_store("mongomock://" if backend == "mongomock" else "", "bench", folder)
    store.ensure_indexes()
    synthetic.write(store, synth)
    claims = [{"_id": image["sha256"], "image_id": image["_id"], "claimant": "bench"}
              for image in store.iter_ready_images({"sha256": 1})]
    for start in range(0, len(claims), synthetic.BATCH):
        store._insert("image_hashes", claims[start:start + synthetic.BATCH])
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faces", type=int, default=10000)
    parser.add_argument("--backend", choices=("embedded", "mongomock"), default="embedded")
    args = parser.parse_args()
    synth = synthetic.generate(args.faces)
    with tempfile.TemporaryDirectory() as folder:
        source = gallery(args.backend, os.path.join(folder, "a"), synth)
        target = gallery(args.backend, os.path.join(folder, "b"), synth)
        started = time.perf_counter()
        text = "".join(exchange.export_document(source, exported_at=""))
        export_s = time.perf_counter() - started
        document = json.loads(text)
        started = time.perf_counter()
        first = people_import.import_document(target, document)
        import_s = time.perf_counter() - started
        started = time.perf_counter()
        again = people_import.import_document(target, document)
        again_s = time.perf_counter() - started
    faces = args.faces
    print(f"export/import round trip, {args.backend} store, {faces:,} faces, "
          f"{synth.n_images:,} photos, {synth.n_persons:,} persons")
    print(f"  export:       {export_s:7.2f} s  {len(text) / 2**20:6.1f} MB "
          f"({len(text) / faces:.0f} bytes a face)")
    print(f"  import:       {import_s:7.2f} s  ({faces / import_s:,.0f} faces/s; "
          f"{first['persons']['created']:,} persons created, "
          f"{first['faces']['assigned']:,} faces assigned)")
    print(f"  import again: {again_s:7.2f} s  ({again['faces']['assigned']} assigned, "
          f"{again['persons']['created']} created: idempotent)")
    print(f"  ratio import/export: {import_s / export_s:.1f}x")
    print(f"  machine: {platform.machine()}, {os.cpu_count()} cpus, Python "
          f"{platform.python_version()}")


if __name__ == "__main__":
    main()
