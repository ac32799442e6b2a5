"""Synthetic face embeddings shaped like dlib's, and a fast way to put them into a Store.

Shared by ``bench/search.py`` and ``bench/recluster.py``; ``python -m bench.synthetic`` prints
the distance check below for 10,000 faces.

The geometry follows what ``services/clustering.py`` measured on real dlib encodings:

* a person is a cluster of 5-50 faces around a centre; a face is ``centre + noise`` with
  per-dimension sigma ``s0 * exp(0.2 z)`` (each face its own ``z``: some photos are worse),
  so two faces of one person are 0.45 apart on average, most of them 0.35-0.55;
* centres are ``MEAN + normal(0, c)`` with ``c`` chosen so that two faces of different
  persons are about 0.86 apart; the shared ``MEAN`` gives every vector an L2 norm near 1, as
  dlib's do (it changes no distance, but float32 search sees the same cancellation);
* faces sit in images of 1-6 faces, never two faces of one person in one image;
* the person a face is filed under is its true cluster, except that 5 % of the clusters
  are split in two persons at random, as incremental uploads do now and then: re-clustering
  has merges to find.

:func:`fill_store` writes faces, persons and images documents shaped like the upload
pipeline's (``services/gallery.py`` ``_write_faces``, ``services/people.py``
``new_person_doc``), in batches of 1,000, and sets the counters. It writes no image blobs,
hashes or face crops (benchmarks read embeddings only), so the gallery it leaves is not
complete: do not run the invariant checker on it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from datetime import datetime
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from services import bookkeeping
from services import storage
from services.storage import Store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DIM = 128
#: Mean distance between two faces of one person, and between faces of two persons.
WITHIN = 0.45
BETWEEN = 0.86
#: Log-sd of each face's noise scale: spreads within-person distances to ~0.35-0.55.
FACE_SPREAD = 0.2
SIZES = (5, 50)
#: Share of images holding 1, 2, ... 6 faces (mean 2.25 faces an image).
FACES_PER_IMAGE = (0.40, 0.25, 0.15, 0.10, 0.06, 0.04)
SPLIT_SHARE = 0.05
BATCH = 1000

# E|a - b|^2 = 2 * DIM * s0^2 * E[exp(2 * 0.2 z)] for two faces of one person.
_S0 = WITHIN / math.sqrt(2 * DIM * math.exp(2 * FACE_SPREAD**2))
# Faces of two persons: centre distance^2 plus the within part.
_C = math.sqrt(BETWEEN**2 - WITHIN**2) / math.sqrt(2 * DIM)
_MEAN_NORM = math.sqrt(1.0 - DIM * _C**2 - DIM * _S0**2 * math.exp(2 * FACE_SPREAD**2))

Doc = dict[str, object]


@dataclasses.dataclass
class Synthetic:
    """Faces in upload order: index ``i`` is the face with ``seq`` ``i + 1``."""

    embeddings: npt.NDArray[np.float32]  #: (n, 128)
    truth: npt.NDArray[np.intp]  #: true cluster of each face
    person: npt.NDArray[np.intp]  #: person it is filed under (splits included)
    image: npt.NDArray[np.intp]  #: image of each face; images numbered in upload order
    centres: npt.NDArray[np.float32]  #: one per true cluster
    seed: int

    @property
    def n_faces(self) -> int:
        return len(self.embeddings)

    @property
    def n_images(self) -> int:
        return int(self.image.max()) + 1

    @property
    def n_persons(self) -> int:
        return int(self.person.max()) + 1

    @property
    def n_clusters(self) -> int:
        return len(self.centres)

    def distance_check(self, pairs: int = 5000) -> dict[str, float]:
        """Mean and 5-95 % range of face distances within and between persons, sampled."""
        rng = np.random.default_rng(self.seed + 1)
        order = np.argsort(self.truth, kind="stable")
        starts = np.searchsorted(self.truth[order], np.arange(self.n_clusters))
        sizes = np.bincount(self.truth, minlength=self.n_clusters)
        cluster = rng.integers(0, self.n_clusters, size=pairs)
        a = rng.integers(0, sizes[cluster])
        b = (a + rng.integers(1, sizes[cluster])) % sizes[cluster]  # a different face
        within = self._distances(order[starts[cluster] + a], order[starts[cluster] + b])
        i, j = rng.integers(0, self.n_faces, size=(2, pairs * 2))
        keep = self.truth[i] != self.truth[j]
        between = self._distances(i[keep][:pairs], j[keep][:pairs])
        norms = np.linalg.norm(self.embeddings[i[:pairs]].astype(np.float64), axis=1)
        return {
            "within_mean": float(within.mean()), "within_p5": float(np.quantile(within, 0.05)),
            "within_p95": float(np.quantile(within, 0.95)),
            "within_over_0.6": float((within > 0.6).mean()),
            "between_mean": float(between.mean()),
            "between_p5": float(np.quantile(between, 0.05)),
            "between_p95": float(np.quantile(between, 0.95)),
            "between_under_0.6": float((between <= 0.6).mean()),
            "norm_mean": float(norms.mean()),
        }

    def _distances(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        x = self.embeddings.astype(np.float64)
        return np.linalg.norm(x[i] - x[j], axis=1)

    def queries(self, count: int, *, stranger_share: float = 0.2) -> npt.NDArray[np.float32]:
        """New photos: of known persons (a fresh face around a centre), and of strangers."""
        rng = np.random.default_rng(self.seed + 2)
        strangers = int(round(count * stranger_share))
        known = self.centres[rng.integers(0, self.n_clusters, size=count - strangers)]
        mean = _mean_vector(self.seed)
        centres = np.concatenate([known, _centres(rng, strangers, mean)])
        return _faces_around(rng, centres)


def summary(synth: Synthetic) -> str:
    """Two lines on the data, for a result block."""
    check = synth.distance_check()
    split = synth.n_persons - synth.n_clusters
    return (
        f"{synth.n_faces} faces in {synth.n_images} images, {synth.n_clusters} true persons "
        f"filed as {synth.n_persons} ({split} split in two)\n"
        f"distances (sampled): within a person mean {check['within_mean']:.3f} "
        f"[p5-p95 {check['within_p5']:.2f}-{check['within_p95']:.2f}, "
        f"{check['within_over_0.6']:.1%} > 0.6]; between persons mean "
        f"{check['between_mean']:.3f} [p5-p95 {check['between_p5']:.2f}-"
        f"{check['between_p95']:.2f}, {check['between_under_0.6']:.3%} <= 0.6]; "
        f"|x| {check['norm_mean']:.2f}"
    )


# -- generating ---------------------------------------------------------------------------

def generate(n_faces: int, seed: int = 7) -> Synthetic:
    """``n_faces`` synthetic faces (at least 2,000: images need room to keep persons apart)."""
    if n_faces < 2000:
        raise ValueError("n_faces must be at least 2,000")
    rng = np.random.default_rng(seed)
    sizes = _cluster_sizes(n_faces, rng)
    mean = _mean_vector(seed)
    centres = _centres(rng, len(sizes), mean)
    # The faces of one person side by side (cluster numbers are random already).
    truth_run = np.repeat(np.arange(len(sizes)), sizes)
    image_run = _images_for_run(n_faces, rng)
    # Upload order: images in a random order, the faces of an image in a random order.
    image_rank = rng.permutation(int(image_run.max()) + 1)
    image = image_rank[image_run]
    order = np.lexsort((rng.random(n_faces), image))
    truth = truth_run[order]
    image = image[order]
    if len(np.unique(image * len(sizes) + truth)) != n_faces:
        raise AssertionError("two faces of one person in one image")
    person = _split_some(truth, rng)
    embeddings = _faces_around(rng, centres[truth])
    return Synthetic(embeddings=embeddings, truth=truth, person=person, image=image,
                     centres=centres, seed=seed)


def _mean_vector(seed: int) -> np.ndarray:
    direction = np.random.default_rng(seed + 3).standard_normal(DIM)
    return direction / np.linalg.norm(direction) * _MEAN_NORM


def _centres(rng: np.random.Generator, count: int, mean: np.ndarray) -> np.ndarray:
    return (mean + rng.standard_normal((count, DIM)) * _C).astype(np.float32)


def _faces_around(rng: np.random.Generator, centres: np.ndarray) -> npt.NDArray[np.float32]:
    out = np.empty(centres.shape, dtype=np.float32)
    step = 100_000  # bounded float32 temporaries at a million faces
    for start in range(0, len(centres), step):
        part = centres[start:start + step]
        scale = (_S0 * np.exp(FACE_SPREAD * rng.standard_normal(len(part)))).astype(np.float32)
        noise = rng.standard_normal(part.shape, dtype=np.float32)
        out[start:start + step] = part + noise * scale[:, None]
    return out


def _cluster_sizes(total: int, rng: np.random.Generator) -> np.ndarray:
    low, high = SIZES
    sizes = rng.integers(low, high + 1, size=max(1, round(total / ((low + high) / 2))))
    _adjust(sizes, total, low, high, rng)
    return sizes


def _adjust(counts: np.ndarray, total: int, low: int, high: int,
            rng: np.random.Generator) -> None:
    """Add or take one at random entries (kept within low..high) until they sum to total."""
    diff = total - int(counts.sum())
    while diff:
        step = 1 if diff > 0 else -1
        room = np.flatnonzero(counts < high if step > 0 else counts > low)
        pick = rng.choice(room, size=min(abs(diff), len(room)), replace=False)
        counts[pick] += step
        diff -= step * len(pick)


def _images_for_run(n_faces: int, rng: np.random.Generator) -> np.ndarray:
    """The image of each face of a run in which each person's faces are contiguous.

    Images sorted by face count, largest first, are dealt in rounds: round ``r`` goes to the
    images with more than ``r`` faces. An image's consecutive faces are then one round's
    length apart in the run, more than the 50 faces of the largest person, so no image gets
    two faces of one person.
    """
    weights = np.asarray(FACES_PER_IMAGE)
    mean = float((weights * np.arange(1, len(weights) + 1)).sum())
    counts = rng.choice(np.arange(1, len(weights) + 1), size=round(n_faces / mean), p=weights)
    _adjust(counts, n_faces, 1, len(weights), rng)
    counts = np.sort(counts)[::-1]
    rounds = [np.flatnonzero(counts > r) for r in range(len(weights))]
    if any(0 < len(b) and len(a) <= SIZES[1] for a, b in zip(rounds, rounds[1:], strict=False)):
        raise ValueError("too few images to keep persons apart")
    return np.concatenate(rounds)


def _split_some(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Person of each face: its cluster, but SPLIT_SHARE of clusters in two random halves."""
    n_clusters = int(truth.max()) + 1
    person = truth.copy()
    split = rng.choice(n_clusters, size=round(n_clusters * SPLIT_SHARE), replace=False)
    for number, cluster in enumerate(split):
        members = np.flatnonzero(truth == cluster)
        half = rng.permutation(members)[: len(members) // 2]
        person[half] = n_clusters + number
    return person


# -- writing ------------------------------------------------------------------------------

def fill_store(store: Store, n_faces: int, seed: int = 7) -> dict[str, int]:
    """Write ``n_faces`` synthetic faces into ``store``; returns face id -> true person."""
    return write(store, generate(n_faces, seed))


def write(store: Store, synth: Synthetic) -> dict[str, int]:
    """Write faces, persons, images and counters for ``synth``; returns face id -> truth."""
    rng = np.random.default_rng(synth.seed + 4)
    start = datetime(2024, 1, 1)
    template = bookkeeping.new_person_doc(store)
    face_ids = [storage.new_id() for _ in range(synth.n_faces)]
    image_ids = [storage.new_id() for _ in range(synth.n_images)]
    person_ids = [storage.new_id() for _ in range(synth.n_persons)]
    quality = np.round(rng.uniform(0.3, 1.0, size=synth.n_faces), 4)
    image_counts = np.bincount(synth.image, minlength=synth.n_images)
    image_moment = [start + timedelta(seconds=37 * i) for i in range(synth.n_images)]
    place = np.zeros(synth.n_images, dtype=np.intp)

    faces: list[Doc] = []
    for i in range(synth.n_faces):
        image = int(synth.image[i])
        slot = int(place[image])
        place[image] += 1
        moment = image_moment[image]
        left = 10 + 110 * slot
        faces.append({
            "_id": face_ids[i], "seq": i + 1, "image_id": image_ids[image],
            "image_seq": image + 1, "person_id": person_ids[synth.person[i]],
            "embedding": storage.embedding_to_bytes(synth.embeddings[i]),
            "face_location": {"top": 40, "right": left + 100, "bottom": 140, "left": left},
            "quality_score": float(quality[i]), "detector_score": 1.0,
            "is_manual_assignment": False, "assigned_by": "auto",
            "cropped_face_filename": f"face_{face_ids[i]}.jpg",
            "created_at": moment, "updated_at": moment,
        })
        if len(faces) == BATCH:
            store._insert("faces", faces)
            faces = []
    store._insert("faces", faces)

    images: list[Doc] = []
    for image, image_id in enumerate(image_ids):
        moment = image_moment[image]
        width = 20 + 110 * int(image_counts[image])
        images.append({
            "_id": image_id, "seq": image + 1, "status": "ready",
            "filename": f"IMG_{image + 1:07d}.jpg", "mime_type": "image/jpeg",
            "sha256": f"{image + 1:064x}", "size_bytes": 0, "original_size_bytes": 0,
            "original_format": "JPEG", "width": width, "height": 180, "exif": {},
            "taken_at": None, "photo_date": moment, "album_id": "", "section_id": "",
            "face_count": int(image_counts[image]), "created_at": moment, "updated_at": moment,
        })
        if len(images) == BATCH:
            store._insert("images", images)
            images = []
    store._insert("images", images)

    # Each person's count, best face, first and last upload, from the faces in order.
    counts = np.bincount(synth.person, minlength=synth.n_persons)
    best = np.full(synth.n_persons, -1, dtype=np.intp)
    first = np.full(synth.n_persons, -1, dtype=np.intp)
    for i, p in enumerate(synth.person.tolist()):
        if best[p] < 0 or quality[i] > quality[best[p]]:
            best[p] = i
        if first[p] < 0:
            first[p] = i
    last = np.zeros(synth.n_persons, dtype=np.intp)
    last[synth.person] = np.arange(synth.n_faces)  # the last write per person wins
    persons: list[Doc] = []
    for p, person_id in enumerate(person_ids):
        name = f"Person {p + 1}"
        persons.append({
            **template, "_id": person_id, "number": p + 1, "name": name,
            "name_lc": name.lower(), "face_count": int(counts[p]),
            "image_count": int(counts[p]), "manual_face_count": 0,
            "thumbnail_face_id": face_ids[best[p]], "thumbnail_quality": float(quality[best[p]]),
            "created_at": image_moment[synth.image[first[p]]],
            "updated_at": image_moment[synth.image[last[p]]],
        })
        if len(persons) == BATCH:
            store._insert("persons", persons)
            persons = []
    store._insert("persons", persons)

    for name, value in (("faces", synth.n_faces), ("images", synth.n_images),
                        ("person_number", synth.n_persons)):
        store.db.counters.update_one({"_id": name}, {"$set": {"v": value}}, upsert=True)
    return dict(zip(face_ids, synth.truth.tolist(), strict=True))


if __name__ == "__main__":
    print(summary(generate(10_000)))
