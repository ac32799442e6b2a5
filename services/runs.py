"""Re-clustering runs: the diff a re-clustering makes, and its record (the rollback of a run
is :mod:`services.rollback`).

Every real re-clustering is a numbered run (counter ``cluster_runs``): one document with its
parameters, who asked, when, and its summary; one ``cluster_run_moves`` document per face it
moved (``from_person_id``, ``to_person_id``, the face's manual flag before, and whether the
target was a person it created); one ``cluster_run_persons`` snapshot per person it was about
to delete. A rollback is itself a run (``kind: "rollback"``, ``rollback_of: n``) recording
the moves it makes, and the run it undid names it in ``rolled_back_by``.

Diff vocabulary (README "Re-clustering runs and rollback"): an old person whose faces end in
two or more persons is **split**; a resulting person that takes in the whole of another old
person, besides faces it keeps or the whole of a second one, is **merged** (it lists the
persons it took in); an old person left with no face is **deleted**; a person the run makes
is **created**. ``churn`` is the share of faces whose person changes.
"""

from __future__ import annotations

import typing as t
from collections import Counter
from collections import defaultdict

from errors import DocumentNotFoundError
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

#: The counter numbering runs (re-clusterings and rollbacks share it).
RUN_COUNTER = "cluster_runs"
#: Lists of persons in a diff stop here (their totals are in the summary).
DIFF_LIST_CAP = 1000


# -- the diff -----------------------------------------------------------------------------

def diff(faces: list[Doc], targets: list[str], persons: dict[str, Doc], created: list[str],
         *, labels: dict[str, str] | None = None) -> tuple[list[Doc], Doc]:
    """The moves (each ``{face_id, from_person_id, to_person_id}``) and the persons created,
    merged, split, deleted and named-and-affected of a grouping, plus ``churn``.

    ``labels`` renames persons in the answer (a dry run's provisional new persons).
    """
    name = (labels or {}).get
    moves = [{"face_id": f["_id"], "from_person_id": f["person_id"],
              "to_person_id": name(to, to)}
             for f, to in zip(faces, targets, strict=True) if f["person_id"] != to]
    ends: dict[str, Counter[str]] = defaultdict(Counter)  # old person -> where its faces go
    sources: dict[str, set[str]] = defaultdict(set)  # resulting person -> old persons
    for face, to in zip(faces, targets, strict=True):
        ends[face["person_id"]][to] += 1
        sources[to].add(face["person_id"])
    kept = set(targets)
    lost: Counter[str] = Counter(m["from_person_id"] for m in moves)
    gained: Counter[str] = Counter(to for f, to in zip(faces, targets, strict=True)
                                   if f["person_id"] != to)

    def person(person_id: str) -> Doc:
        return {"person_id": name(person_id, person_id),
                "name": persons.get(person_id, {}).get("name")}

    split = [{**person(p), "into": sorted(name(x, x) for x in ends[p])}
             for p in sorted(ends) if len(ends[p]) > 1]
    merged = []
    for p in sorted(sources):
        # Old persons that went whole into p (p itself apart): joined with what p kept.
        whole = sorted(x for x in sources[p] if x != p and len(ends[x]) == 1)
        if whole and (p in sources[p] or len(whole) > 1):
            merged.append({**person(p), "from_person_ids": whole})
    deleted = [person(p) for p in sorted(lost) if p not in kept]
    named = [{**person(p), "faces_lost": lost[p], "faces_gained": gained[p],
              "deleted": p not in kept}
             for p in sorted(set(lost) | set(gained))
             if persons.get(p, {}).get("named_by_user")]
    made = [{"person_id": name(p, p), "face_count": gained[p]} for p in created if p in kept]
    summary = {"churn": round(len(moves) / len(faces), 4) if faces else 0.0, "diff": {
        "persons_created": made[:DIFF_LIST_CAP], "persons_merged": merged[:DIFF_LIST_CAP],
        "persons_split": split[:DIFF_LIST_CAP], "persons_deleted": deleted[:DIFF_LIST_CAP],
        "named_persons_affected": named[:DIFF_LIST_CAP],
        "counts": {"persons_created": len(made), "persons_merged": len(merged),
                   "persons_split": len(split), "persons_deleted": len(deleted),
                   "named_persons_affected": len(named), "faces_moved": len(moves)},
    }}
    return moves, summary


def dry_run_result(faces: list[Doc], targets: list[str], persons: dict[str, Doc],
                   created: list[str], result: Doc, *, moves_limit: int, moves_offset: int
                   ) -> Doc:
    """A dry run's answer: the summary a run would give, its diff, one page of moves.

    Persons the run would create are named ``new:1``, ``new:2``... (their ids and numbers
    are given only when a run makes them)."""
    labels = {person_id: f"new:{k + 1}" for k, person_id in enumerate(created)}
    moves, summary = diff(faces, targets, persons, created, labels=labels)
    return {**result, "dry_run": True, **summary,
            **_page("moves", moves[moves_offset:moves_offset + moves_limit], len(moves),
                    moves_limit, moves_offset)}


def _page(key: str, items: list[Doc], total: int, limit: int, offset: int) -> Doc:
    return {key: items, f"{key}_total": total, f"{key}_limit": limit,
            f"{key}_offset": offset}


# -- recording a run ---------------------------------------------------------------------

def begin_run(store: Store, number: int, *, params: Doc, by: str, faces: list[Doc],
              targets: list[str], persons: dict[str, Doc], created: list[str]) -> None:
    """Record run ``number`` before it writes: its moves, a snapshot of each person it will
    delete, then the run document (``status: running``) last, so a run document always has
    its records (repair removes records a kill left without one)."""
    new = set(created)
    moves = [{"face_id": f["_id"], "from_person_id": f["person_id"], "to_person_id": to,
              "from_manual": bool(f.get("is_manual_assignment")), "to_new": to in new}
             for f, to in zip(faces, targets, strict=True) if f["person_id"] != to]
    store.insert_run_moves(number, moves)
    kept = set(targets)
    doomed = sorted({m["from_person_id"] for m in moves} - kept)
    heirs: dict[str, Counter[str]] = defaultdict(Counter)
    for move in moves:
        heirs[move["from_person_id"]][move["to_person_id"]] += 1
    snapshots = []
    for person_id in doomed:
        person = persons.get(person_id)
        if person is not None:
            # Its corrections go with it (delete_person), and to its heir (the person taking
            # most of its faces, as the run decides): kept, with what the heir held before,
            # so a rollback gives them back and takes the heir's copies away.
            heir = heirs[person_id].most_common(1)[0][0]
            snapshots.append({**person,
                              "rejections": store.rejections_from_person(person_id),
                              "not_same": store.not_same_of(person_id), "heir": heir,
                              "heir_rejections": store.rejections_from_person(heir),
                              "heir_not_same": store.not_same_of(heir)})
    store.insert_run_persons(number, snapshots)
    _, summary = diff(faces, targets, persons, created)
    moment = storage.now()
    store.insert_cluster_run({
        "_id": f"run:{number}", "number": number, "kind": "recluster", "status": "running",
        "params": params, "by": by or "anonymous", "started_at": moment,
        "finished_at": None, "summary": {"faces_processed": len(faces), **summary},
        "rolled_back_by": None, "rollback_of": None})


def end_run(store: Store, number: int, result: Doc) -> Doc:
    """Mark a run done with its summary (the result plus ``churn``); returns the result
    with ``run_number`` and ``churn``."""
    run = store.find_cluster_run(number) or {}
    summary = {**run.get("summary", {}), **result}
    store.update_cluster_run(number, {"status": "done", "finished_at": storage.now(),
                                      "summary": summary})
    return {**result, "run_number": number, "churn": summary.get("churn", 0.0)}


def repair_run(store: Store, number: int) -> None:
    """After a killed re-clustering: its run is ``interrupted`` (what it moved can still be
    rolled back), or, killed before its run document, its partial records go."""
    run = store.find_cluster_run(number)
    if run is None:
        store.delete_run_records(number)
    elif run["status"] == "running":
        store.update_cluster_run(number, {"status": "interrupted",
                                          "finished_at": storage.now()})


# -- reading runs ------------------------------------------------------------------------

def view(run: Doc) -> Doc:
    """A run as the API shows it."""
    return {"number": run["number"], "kind": run["kind"], "status": run["status"],
            "params": run.get("params", {}), "by": run.get("by", ""),
            "started_at": run.get("started_at"), "finished_at": run.get("finished_at"),
            "summary": run.get("summary", {}), "rolled_back_by": run.get("rolled_back_by"),
            "rollback_of": run.get("rollback_of")}


def list_runs(store: Store, *, limit: int, offset: int) -> Doc:
    """Runs newest first."""
    docs, total = store.cluster_runs_page(limit, offset)
    return {"runs": [view(doc) for doc in docs], "total": total, "limit": limit,
            "offset": offset}


def get_run(store: Store, number: int, *, moves_limit: int, moves_offset: int) -> Doc:
    """A run's summary and one page of the faces it moved (by face id).

    :raise DocumentNotFoundError: no run has this number (404).
    """
    run = find_run(store, number)
    moves, total = store.run_moves_page(number, moves_limit, moves_offset)
    shown = [{k: m[k] for k in ("face_id", "from_person_id", "to_person_id")} for m in moves]
    return {**view(run), **_page("moves", shown, total, moves_limit, moves_offset)}


def find_run(store: Store, number: int) -> Doc:
    """A run's document.

    :raise DocumentNotFoundError: no run has this number (404).
    """
    run = store.find_cluster_run(number)
    if run is None:
        raise DocumentNotFoundError(f"Re-clustering run not found with number: {number}",
                                    details={"number": number})
    return run
