"""Group face encodings into persons: encodings in, person labels out.

Distances are Euclidean between dlib's 128-d encodings (:func:`face_distances`). Incremental
assignment (:func:`assign_faces`) compares a new face with each person as a whole (average
linkage, ``tolerance``); re-clustering (:func:`cluster_faces`) is constrained average-linkage
agglomerative clustering cut at ``eps``, with faces of one image never linked and faces fixed
by the user kept apart or together; :func:`match_clusters_to_persons` keeps old person ids.
Why these rules and defaults, with the measurements on the labelled dev set and the scaling
figures, is in ``docs/recognition.md``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Collection
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.cluster.hierarchy import fcluster
from scipy.cluster.hierarchy import linkage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.sparse.csgraph import reverse_cuthill_mckee
from scipy.spatial.distance import pdist

__all__ = [
    "DEFAULT_EPS",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_TOLERANCE",
    "MAX_BLOCK",
    "assign_faces",
    "cluster_faces",
    "face_distances",
    "match_clusters_to_persons",
    "pairwise_scores",
]

DEFAULT_TOLERANCE = 0.59
DEFAULT_EPS = 0.61
DEFAULT_MIN_SAMPLES = 1
#: Length of a dlib face encoding.
ENCODING_SIZE = 128
#: Largest error of a float32 squared distance between dlib encodings (measured: 4e-6).
SQUARED_ERROR_F32 = 1e-5
#: Most faces clustered with one dense distance matrix (2,000 faces: 16 MB of distances).
MAX_BLOCK = 2000

Labels = npt.NDArray[np.intp]
# Stands for "cannot link" in scipy's linkage, which wants finite distances: one such pair
# lifts any mean inside a block of MAX_BLOCK faces above 1e12 / MAX_BLOCK**2 = 2.5e5.
_APART = 1e12
# Pairs within a radius are found with float32 products in row bands of at most this many
# cells (64 MB); the slack keeps pairs that float32 rounding puts just past the radius.
_BAND_CELLS = 1 << 24
_SLACK = 1e-4
# Inside a block a group may miss a better partner in the next block: blocks only make merges
# this sure (mean <= 0.8 eps) and leave the rest to the exact, global merge order.
_BLOCK_CUT = 0.8


def face_distances(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    squared: bool = False,
    a_norms: npt.NDArray[np.floating] | None = None,
) -> npt.NDArray[np.floating]:
    """Euclidean distances between every row of ``a`` and every row of ``b``: ``(len(a), len(b))``.

    The one distance of the gallery (same person below about 0.6), computed with one matrix
    product as ``|a|^2 + |b|^2 - 2ab``, in float32 unless both inputs are float64.
    ``squared`` skips the square root; ``a_norms`` passes ``|a|^2`` when the caller keeps it.

    Exactness, measured on dlib encodings (norms 1.3-1.6): in float32 a squared distance is
    within :data:`SQUARED_ERROR_F32` of the exact value, so a distance near 0.6 is within
    ~1e-5, but one near 0 may read up to ~1.5e-3 (the square root magnifies the error). In
    float64 every distance is within 1e-7. Callers that must decide a threshold exactly
    filter in float32 with a margin and measure the candidates again in float64.
    """
    precise = np.asarray(a).dtype == np.float64 and np.asarray(b).dtype == np.float64
    dtype = np.float64 if precise else np.float32
    x = np.asarray(a, dtype=dtype).reshape(-1, ENCODING_SIZE) if np.size(a) else np.empty(
        (0, ENCODING_SIZE), dtype=dtype)
    y = np.asarray(b, dtype=dtype).reshape(-1, ENCODING_SIZE) if np.size(b) else np.empty(
        (0, ENCODING_SIZE), dtype=dtype)
    d2 = x @ y.T
    d2 *= -2
    d2 += (np.einsum("ij,ij->i", x, x) if a_norms is None else a_norms.astype(dtype))[:, None]
    d2 += np.einsum("ij,ij->i", y, y)[None, :]
    np.maximum(d2, 0, out=d2)
    return d2 if squared else np.sqrt(d2, out=d2)


def assign_faces(
    query: npt.ArrayLike,
    embeddings: npt.ArrayLike,
    person_ids: Sequence[str] | np.ndarray,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    forbidden: Sequence[Collection[str]] | None = None,
) -> list[tuple[str | None, float | None]]:
    """Choose a person per face of one photo: ``(person_id, mean distance)``, or ``(None, None)``.

    ``forbidden[j]`` lists the persons face ``j`` may not join. Pass ``person_ids`` as a numpy
    array when calling often: turning 100,000 Python strings into one costs ~8 ms.
    """
    q = np.atleast_2d(np.asarray(query, dtype=np.float64))
    result: list[tuple[str | None, float | None]] = [(None, None)] * len(q)
    stored = np.asarray(embeddings, dtype=np.float32)
    if len(q) == 0 or stored.size == 0:
        return result
    stored = stored.reshape(len(stored), -1)
    pids = np.asarray(person_ids)
    if len(pids) != len(stored):
        raise ValueError("person_ids needs one entry per stored face")
    if forbidden is not None and len(forbidden) != len(q):
        raise ValueError("forbidden needs one entry per query face")
    # A person's mean can be <= tolerance only if one of its faces is: only those count.
    near = face_distances(q.astype(np.float32), stored, squared=True) <= (tolerance + _SLACK) ** 2
    candidates = np.flatnonzero(near.any(axis=0))
    if candidates.size == 0:
        return result
    persons = np.unique(pids[candidates])
    faces = np.flatnonzero(np.isin(pids, persons))
    code = np.searchsorted(persons, pids[faces])
    dist = face_distances(q, stored[faces].astype(np.float64))
    counts = np.bincount(code, minlength=len(persons))
    mean = np.stack([np.bincount(code, weights=row, minlength=len(persons)) for row in dist])
    mean /= counts
    for j, banned in enumerate(forbidden or ()):
        if banned:
            mean[j, np.isin(persons, list(banned))] = np.inf
    face_done = np.zeros(len(q), dtype=bool)
    person_done = np.zeros(len(persons), dtype=bool)
    for flat in np.argsort(mean, axis=None, kind="stable"):
        j, p = divmod(int(flat), len(persons))
        if mean[j, p] > tolerance:
            break
        if not face_done[j] and not person_done[p]:
            face_done[j] = person_done[p] = True
            result[j] = (str(persons[p]), float(mean[j, p]))
    return result


def cluster_faces(
    embeddings: npt.ArrayLike,
    image_ids: Sequence[str] | np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    min_samples: int = DEFAULT_MIN_SAMPLES,
    fixed: Sequence[str | None] | None = None,
    cannot_link: Sequence[tuple[Sequence[int], Sequence[int]]] | None = None,
) -> Labels:
    """Group all faces into persons by constrained average linkage; labels 0..k-1 by first face.

    ``fixed[i]`` is the person the user fixed face ``i`` to, or None: faces fixed to one
    person share a label, faces fixed to different persons never do, nor faces of one image.
    Each ``(a, b)`` of ``cannot_link`` lists face indices: no face of ``a`` shares a label
    with a face of ``b`` (the user's "not this person" and "not the same people"), unless
    both are fixed to one person (the user's latest word wins).
    """
    x = np.asarray(embeddings, dtype=np.float32)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    x = x.reshape(n, -1)
    image = np.unique(np.asarray(image_ids), return_inverse=True)[1].reshape(n)
    anchor = _anchor_codes(fixed, n)
    apart = _cannot_link_pairs(cannot_link, n)
    rows, cols, dist = _radius_pairs(x, eps)
    # Must-link: chain the faces of each fixed person, whatever their distance.
    fixed_faces = np.flatnonzero(anchor >= 0)
    fixed_faces = fixed_faces[np.argsort(anchor[fixed_faces], kind="stable")]
    same = anchor[fixed_faces[1:]] == anchor[fixed_faces[:-1]]
    a = np.concatenate([rows, fixed_faces[:-1][same]])
    b = np.concatenate([cols, fixed_faces[1:][same]])
    graph = csr_matrix((np.ones(2 * len(a)), (np.r_[a, b], np.r_[b, a])), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, minlength=n_comp)
    labels = np.full(n, -1, dtype=np.intp)
    alone = sizes[comp] == 1
    labels[alone] = np.arange(int(alone.sum()))
    next_label = int(alone.sum())
    order = np.argsort(comp, kind="stable")
    for members in np.split(order, np.cumsum(sizes)[:-1]):
        if len(members) < 2:
            continue
        local = _local_pairs(apart, members, n)
        if len(members) <= MAX_BLOCK:
            sub = _linkage_block(x[members], image[members], anchor[members], eps, local)
        else:
            sub = _cluster_large(x[members], image[members], anchor[members],
                                 graph[members][:, members], eps, local)
        labels[members] = sub + next_label
        next_label += int(sub.max()) + 1
    if min_samples > 1:
        labels = _absorb_small(labels, rows, cols, dist, image, anchor, min_samples, eps,
                               apart)
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first))[inverse.reshape(n)].astype(np.intp)


def match_clusters_to_persons(
    labels: npt.ArrayLike,
    current_person_ids: Sequence[str | None],
    fixed: Sequence[str | None] | None = None,
    forbidden: Sequence[Collection[str]] | None = None,
) -> tuple[dict[int, str | None], dict[int, list[str]]]:
    """Map each cluster to an old person id (None: a new person) and list the persons merged in.

    ``forbidden[i]`` lists the persons face ``i`` may not be in: its cluster never becomes
    one of them. An old person that keeps no cluster is reported as merged into the cluster
    holding most of its faces (ties to the smaller label).
    """
    lab = [int(v) for v in np.asarray(labels).ravel()]
    if len(current_person_ids) != len(lab):
        raise ValueError("current_person_ids needs one entry per face")
    if forbidden is not None and len(forbidden) != len(lab):
        raise ValueError("forbidden needs one entry per face")
    mapping: dict[int, str | None] = dict.fromkeys(sorted(set(lab)))
    banned: dict[int, set[str]] = {label: set() for label in mapping}
    for label, persons in zip(lab, forbidden or [()] * len(lab), strict=True):
        banned[label].update(persons)
    used: set[str] = set()
    for label, person in zip(lab, [None] * len(lab) if fixed is None else fixed, strict=True):
        if person is None or mapping[label] == person:
            continue
        if mapping[label] is not None or person in used or person in banned[label]:
            raise ValueError(f"fixed person {person} is split or shares a cluster")
        mapping[label] = person
        used.add(person)
    pairs = zip(lab, current_person_ids, strict=True)
    overlap = Counter((label, p) for label, p in pairs if p is not None)
    for (label, person), _ in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0][1], kv[0][0])):
        if mapping[label] is None and person not in used and person not in banned[label]:
            mapping[label] = person
            used.add(person)
    merged: dict[int, list[str]] = {label: [] for label in mapping}
    home: dict[str, tuple[int, int]] = {}
    for (label, person), count in overlap.items():
        if person not in used and (-count, label) < home.get(person, (1, 0)):
            home[person] = (-count, label)
    for person in sorted(home):
        merged[home[person][1]].append(person)
    return mapping, merged


def pairwise_scores(pred: npt.ArrayLike, true: npt.ArrayLike) -> tuple[float, float, float]:
    """Pairwise precision, recall and F1: a face pair is positive when it shares a label."""
    p = np.unique(np.asarray(pred), return_inverse=True)[1].ravel()
    t = np.unique(np.asarray(true), return_inverse=True)[1].ravel()
    if len(p) != len(t):
        raise ValueError("pred and true differ in length")
    if len(p) == 0:
        return 1.0, 1.0, 1.0

    def pairs(codes: np.ndarray) -> int:
        counts = np.bincount(codes)
        return int((counts * (counts - 1) // 2).sum())

    both = pairs(np.unique(p * (int(t.max()) + 1) + t, return_inverse=True)[1].ravel())
    predicted, actual = pairs(p), pairs(t)
    # No pair claimed means nothing claimed wrongly: precision 1 (and likewise recall).
    precision = both / predicted if predicted else 1.0
    recall = both / actual if actual else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _anchor_codes(fixed: Sequence[str | None] | None, n: int) -> Labels:
    """Integer code of each face's fixed person, -1 where none."""
    if fixed is None:
        return np.full(n, -1, dtype=np.intp)
    if len(fixed) != n:
        raise ValueError("fixed needs one entry per face")
    table: dict[str, int] = {}
    codes = [-1 if f is None else table.setdefault(f, len(table)) for f in fixed]
    return np.asarray(codes, dtype=np.intp)


def _cannot_link_pairs(
    cannot_link: Sequence[tuple[Sequence[int], Sequence[int]]] | None, n: int
) -> tuple[Labels, Labels]:
    """Every face pair ``(i, j)`` kept apart by ``cannot_link``, both orders, i != j."""
    parts = [np.zeros((2, 0), dtype=np.intp)]
    for a, b in cannot_link or ():
        left, right = np.asarray(a, dtype=np.intp), np.asarray(b, dtype=np.intp)
        if np.any((left < 0) | (left >= n)) or np.any((right < 0) | (right >= n)):
            raise ValueError("cannot_link names a face index out of range")
        i, j = np.repeat(left, len(right)), np.tile(right, len(left))
        parts += [np.stack([i, j]), np.stack([j, i])]
    pairs = np.unique(np.concatenate(parts, axis=1), axis=1)
    pairs = pairs[:, pairs[0] != pairs[1]]
    return pairs[0], pairs[1]


def _local_pairs(apart: tuple[Labels, Labels], members: Labels, n: int
                 ) -> tuple[Labels, Labels]:
    """The pairs of ``apart`` inside ``members``, as positions in ``members``."""
    local = np.full(n, -1, dtype=np.intp)
    local[members] = np.arange(len(members))
    i, j = local[apart[0]], local[apart[1]]
    inside = (i >= 0) & (j >= 0)
    return i[inside], j[inside]


def _radius_pairs(x: np.ndarray, radius: float) -> tuple[Labels, Labels, np.ndarray]:
    """Face pairs ``i < j`` within ``radius`` and their distances, in bounded row bands."""
    n = len(x)
    band = max(1, _BAND_CELLS // n)
    limit = (radius + _SLACK) ** 2
    sq = np.einsum("ij,ij->i", x, x)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start in range(0, n, band):
        part = face_distances(x[start:start + band], x[start:], squared=True,
                              a_norms=sq[start:start + band])
        flat = np.flatnonzero(part <= limit)
        i, j = np.divmod(flat, n - start)
        keep = j > i  # the band's columns start at its first row: j > i is the upper triangle
        i, j = i[keep], j[keep]
        found.append((i + start, j + start, np.sqrt(part[i, j])))
    rows, cols, dist = (np.concatenate(parts) for parts in zip(*found, strict=True))
    return rows.astype(np.intp), cols.astype(np.intp), dist


def _linkage_block(x: np.ndarray, image: Labels, anchor: Labels, eps: float,
                   apart: tuple[Labels, Labels] | None = None) -> Labels:
    """Exact constrained average linkage of a few thousand faces at most; labels from 0."""
    d = pdist(x.astype(np.float64))
    i, j = np.triu_indices(len(x), 1)  # pdist's pair order
    both_fixed = (anchor[i] >= 0) & (anchor[j] >= 0)
    d[(image[i] == image[j]) | (both_fixed & (anchor[i] != anchor[j]))] = _APART
    if apart is not None and len(apart[0]):
        low, high = np.minimum(*apart), np.maximum(*apart)
        m = len(x)  # pdist's index of the pair (low, high), low < high:
        d[m * low - low * (low + 1) // 2 + (high - low - 1)] = _APART
    d[both_fixed & (anchor[i] == anchor[j])] = 0.0  # after _APART: fixed wins over same image
    return (fcluster(linkage(d, "average"), eps, criterion="distance") - 1).astype(np.intp)


def _cluster_large(
    x: np.ndarray, image: Labels, anchor: Labels, graph: csr_matrix, eps: float,
    apart: tuple[Labels, Labels],
) -> Labels:
    """Average linkage of a component too large for one matrix: exact blocks, then merges."""
    # Each fixed person starts as one group, as its zero distances make it in one matrix;
    # the other faces are cut into graph-local blocks.
    _, init = np.unique(anchor, return_inverse=True)
    init = init.reshape(len(x)).astype(np.intp)
    offset = int(init.max()) + 1
    order = reverse_cuthill_mckee(csr_matrix(graph), symmetric_mode=True)
    order = order[anchor[order] < 0]
    for block in np.array_split(order, -(-len(order) // MAX_BLOCK)) if len(order) else []:
        if len(block) == 1:
            sub = np.zeros(1, dtype=np.intp)
        else:
            sub = _linkage_block(x[block], image[block], anchor[block], eps * _BLOCK_CUT,
                                 _local_pairs(apart, block, len(x)))
        init[block] = sub + offset
        offset += int(sub.max()) + 1
    rows, cols = graph.nonzero()
    return _merge_groups(x.astype(np.float64), image, anchor, init, rows, cols, eps, apart)


def _merge_groups(
    x: np.ndarray, image: Labels, anchor: Labels, init: Labels,
    rows: np.ndarray, cols: np.ndarray, eps: float,
    apart: tuple[Labels, Labels] | None = None,
) -> Labels:
    """Merge neighbouring groups by exact mean distance until no allowed pair is <= eps."""
    ids, counts = np.unique(init, return_counts=True)
    by_group = np.split(np.argsort(init, kind="stable"), np.cumsum(counts)[:-1])
    members = dict(zip(ids.tolist(), by_group, strict=True))
    images = {g: set(image[m].tolist()) for g, m in members.items()}
    anchors = {g: set(anchor[m].tolist()) - {-1} for g, m in members.items()}
    # The groups each group may never join (cannot-link), kept current through merges.
    enemies: dict[int, set[int]] = {g: set() for g in members}
    for a, b in zip(*(init[side] for side in apart or ((), ())), strict=True):
        if a != b:
            enemies[int(a)].add(int(b))
    sums: dict[int, dict[int, float]] = {g: {} for g in members}
    version = dict.fromkeys(members, 0)
    heap: list[tuple[float, int, int, int, int]] = []

    def cross(a: int, b: int) -> float:
        xa, xb = x[members[a]], x[members[b]]
        step = max(1, _BAND_CELLS // len(xb))
        return sum(float(face_distances(xa[s:s + step], xb).sum())
                   for s in range(0, len(xa), step))

    def offer(a: int, b: int) -> None:
        if images[a] & images[b] or (anchors[a] and anchors[b] and anchors[a] != anchors[b]):
            return
        if b in enemies[a] and not (anchors[a] and anchors[a] == anchors[b]):
            return
        mean = sums[a][b] / (len(members[a]) * len(members[b]))
        if mean <= eps:
            heapq.heappush(heap, (mean, a, b, version[a], version[b]))

    def merge(a: int, b: int) -> None:
        for c in (set(sums[a]) | set(sums[b])) - {a, b}:
            total = sums[a].pop(c, None)
            total = cross(a, c) if total is None else total
            other = sums[b].pop(c, None)
            total += cross(b, c) if other is None else other
            sums[c].pop(b, None)
            sums[a][c] = sums[c][a] = total
        sums[a].pop(b, None)
        del sums[b], version[b]
        members[a] = np.concatenate([members[a], members.pop(b)])
        images[a] |= images.pop(b)
        anchors[a] |= anchors.pop(b)
        for c in enemies.pop(b):
            enemies[c].discard(b)
            if c != a:
                enemies[c].add(a)
                enemies[a].add(c)
        version[a] += 1
        for c in sums[a]:
            offer(a, c)

    ga, gb = init[rows], init[cols]
    for a, b in set(zip(np.minimum(ga, gb).tolist(), np.maximum(ga, gb).tolist(), strict=True)):
        if a != b:
            sums[a][b] = sums[b][a] = cross(a, b)
            offer(a, b)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if version.get(a) == va and version.get(b) == vb:
            merge(a, b)
    labels = np.empty(len(x), dtype=np.intp)
    for label, m in enumerate(members.values()):
        labels[m] = label
    return labels


def _absorb_small(
    labels: Labels, rows: Labels, cols: Labels, dist: np.ndarray,
    image: Labels, anchor: Labels, min_samples: int, eps: float,
    apart: tuple[Labels, Labels] = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)),
) -> Labels:
    """Move faces of groups below ``min_samples`` (no fixed face) to their nearest face's group."""
    labels = labels.copy()
    sizes = np.bincount(labels)
    small = sizes < min_samples
    small[labels[anchor >= 0]] = False
    if not small.any():
        return labels
    a, b, d = np.r_[rows, cols], np.r_[cols, rows], np.r_[dist, dist]
    keep = small[labels[a]] & ~small[labels[b]] & (d <= eps)
    a, b, d = a[keep], b[keep], d[keep]
    taken: dict[int, set[int]] = {}
    in_target = np.isin(labels, labels[b])
    for label, img in zip(labels[in_target].tolist(), image[in_target].tolist(), strict=True):
        taken.setdefault(label, set()).add(img)
    moved: set[int] = set()
    for k in np.lexsort((d, a)).tolist():
        face, target = int(a[k]), int(labels[b[k]])
        if face in moved:
            continue
        # A face never joins a group holding a face it is kept apart from.
        if image[face] not in taken[target] and not np.any(
                labels[apart[1][apart[0] == face]] == target):
            taken[target].add(int(image[face]))
            labels[face] = target
            moved.add(face)
    return labels
