"""Re-clustering runs: the diff a re-clustering makes, its record, and its rollback.

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

from errors import ConflictError
from errors import DocumentNotFoundError
from services import bookkeeping
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

#: The counter numbering runs (re-clusterings and rollbacks share it).
RUN_COUNTER = "cluster_runs"
#: Lists of persons in a diff stop here (their totals are in the summary).
DIFF_LIST_CAP = 1000
#: Conflicting faces named in a 409 (``total`` says how many there are).
CONFLICTS_NAMED = 50
#: Faces whose later change does not stop a rollback: it wants them where they are now.
_ROLLBACK_VIA = "rollback"


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
    run = _get(store, number)
    moves, total = store.run_moves_page(number, moves_limit, moves_offset)
    shown = [{k: m[k] for k in ("face_id", "from_person_id", "to_person_id")} for m in moves]
    return {**view(run), **_page("moves", shown, total, moves_limit, moves_offset)}


def _get(store: Store, number: int) -> Doc:
    run = store.find_cluster_run(number)
    if run is None:
        raise DocumentNotFoundError(f"Re-clustering run not found with number: {number}",
                                    details={"number": number})
    return run


# -- rollback ----------------------------------------------------------------------------

def rollback(store: Store, number: int, *, force: bool = False, by: str = "") -> Doc:
    """Put every face run ``number`` moved back where it was, recreating the persons it
    deleted (same id, name, fields, corrections) and deleting those it created once empty.

    Runs under the re-clustering lock and is journalled: repair finishes a killed one.
    A face changed since the run (moved, deleted, confirmed, moved by another run, or whose
    old person is gone for good) stops it with 409 naming the faces, unless ``force``: those
    faces are then left where they are and the rest is restored.

    :raise DocumentNotFoundError: no such run (404).
    :raise ConflictError: a rollback run, a run rolled back already or still running, a
        re-clustering running, or faces changed since (409).
    """
    run = _get(store, number)
    _check_can_roll_back(run)
    holder = storage.new_id()
    if not store.acquire_lock(bookkeeping.RECLUSTER_LOCK, holder, 900.0):
        raise ConflictError("A re-clustering or rollback is running; try again when it ends")
    try:
        run = _get(store, number)  # rolled back by another request while we waited?
        _check_can_roll_back(run)
        moves, conflicts = _rollback_plan(store, run)
        if conflicts and not force:
            raise ConflictError(
                f"{len(conflicts)} face(s) changed since run {number}; roll back with "
                "force=true to leave them where they are and restore the rest",
                details={"conflicts": conflicts[:CONFLICTS_NAMED], "total": len(conflicts)})
        own = store.next_seq(RUN_COUNTER)
        with bookkeeping.journal(store, "rollback", lock=[bookkeeping.RECLUSTER_LOCK, holder],
                                 run=own, rollback_of=number):
            store.insert_run_moves(own, moves)
            store.insert_cluster_run({
                "_id": f"run:{own}", "number": own, "kind": "rollback", "status": "running",
                "params": {"force": force}, "by": by or "anonymous",
                "started_at": storage.now(), "finished_at": None,
                "summary": {"faces_skipped": len(conflicts),
                            "skipped": conflicts[:CONFLICTS_NAMED]},
                "rolled_back_by": None, "rollback_of": number})
            result = finish_rollback(store, own)
    finally:
        store.release_lock(bookkeeping.RECLUSTER_LOCK, holder)
    return result


def _check_can_roll_back(run: Doc) -> None:
    number = run["number"]
    if run["kind"] != "recluster":
        raise ConflictError(f"Run {number} is a rollback; re-cluster again instead",
                            details={"number": number})
    if run.get("rolled_back_by"):
        raise ConflictError(f"Run {number} was rolled back already by run "
                            f"{run['rolled_back_by']}",
                            details={"number": number, "rolled_back_by": run["rolled_back_by"]})
    if run["status"] == "running":
        raise ConflictError(f"Run {number} is still running", details={"number": number})


def _rollback_plan(store: Store, run: Doc) -> tuple[list[Doc], list[Doc]]:
    """The moves that undo ``run`` and the faces that stop it (``{face_id, reason}``)."""
    number = run["number"]
    recorded = store.run_moves(number)
    faces = store.faces_for_rollback([m["face_id"] for m in recorded])
    snapshots = store.run_persons(number)
    finished = run.get("finished_at")
    conflicts: list[Doc] = []
    moves: list[Doc] = []
    exists: dict[str, bool] = {}
    for move in recorded:
        face_id, home, there = move["face_id"], move["from_person_id"], move["to_person_id"]
        face = faces.get(face_id)
        reason = ""
        if face is None:
            reason = "deleted"
        elif face["person_id"] == home and face.get("assigned_run") != number:
            continue  # never moved (an interrupted run), or moved back by hand: done
        elif face["person_id"] != there:
            reason = "moved"
        elif (face.get("assigned_run") != number or face.get("assigned_via") != "recluster"
              or face.get("is_manual_assignment")
              or (finished is not None and face.get("updated_at")
                  and face["updated_at"] > finished)):
            reason = "changed"
        else:
            if home not in exists:
                exists[home] = home in snapshots or store.find_person(home) is not None
            if not exists[home]:
                reason = "person_gone"
        if reason:
            conflicts.append({"face_id": face_id, "reason": reason, "person_id": home})
            continue
        moves.append({"face_id": face_id, "from_person_id": there, "to_person_id": home,
                      "to_manual": move.get("from_manual", False),
                      "image_id": face["image_id"]})
    moves, clashes = _without_same_photo(store, moves)
    conflicts.extend(clashes)
    for move in moves:
        move.pop("image_id")
    return moves, conflicts


def _without_same_photo(store: Store, moves: list[Doc]) -> tuple[list[Doc], list[Doc]]:
    """Keep out moves that would put a face in a person holding another face of its photo
    (a face moved there by hand since the run)."""
    leaving = {m["face_id"] for m in moves}
    taken: dict[str, set[str]] = {}
    kept, clashes = [], []
    for move in moves:
        home = move["to_person_id"]
        if home not in taken:
            taken[home] = {f["image_id"] for f in store.faces_of_person(
                home, projection={"image_id": 1}) if f["_id"] not in leaving}
        if move["image_id"] in taken[home]:
            clashes.append({"face_id": move["face_id"], "reason": "same_photo",
                            "person_id": home})
            continue
        taken[home].add(move["image_id"])
        kept.append(move)
    return kept, clashes


def finish_rollback(store: Store, own: int) -> Doc:
    """Apply rollback run ``own`` as recorded; safe to repeat (repair calls it again after
    a kill): each step looks at what is there first."""
    run = store.find_cluster_run(own) or {}
    undone = int(run.get("rollback_of") or 0)
    moves = store.run_moves(own)
    snapshots = store.run_persons(undone)
    recreated = []
    for person_id in sorted({m["to_person_id"] for m in moves}):
        snapshot = snapshots.get(person_id)
        if snapshot is not None and store.find_person(person_id) is None:
            person = {k: v for k, v in snapshot.items() if k not in {"rejections", "not_same"}}
            # Counted from its faces once they are back (reconcile below).
            person.update(face_count=0, image_count=0, manual_face_count=0,
                          updated_at=storage.now())
            try:
                store.insert_persons([person])
                recreated.append(person_id)
            except storage.DuplicateKeyError:
                pass
    faces = store.faces_for_rollback([m["face_id"] for m in moves])
    restored = 0
    for move in moves:
        face = faces.get(move["face_id"])
        if face is None:
            continue
        done = (face["person_id"] == move["to_person_id"]
                and face.get("assigned_via") == _ROLLBACK_VIA and face.get("assigned_run") == own)
        if not done:
            store.set_face_person(move["face_id"], move["to_person_id"],
                                  manual=bool(move.get("to_manual")), via=_ROLLBACK_VIA, run=own)
        restored += 1
    # Every snapshotted person, not only those recreated now: a repeat after a kill finds
    # them recreated already, and giving a record twice is one record.
    for person_id in sorted({m["to_person_id"] for m in moves} & set(snapshots)):
        if store.find_person(person_id) is not None:
            _give_back_corrections(store, snapshots[person_id])
    touched = {m["to_person_id"] for m in moves} | {m["from_person_id"] for m in moves}
    deleted = [p for p in sorted(touched) if bookkeeping.reconcile_person(store, p) == "deleted"]
    store.new_epoch()  # every worker reloads its embedding index once
    total = store.count("faces")
    summary = {**run.get("summary", {}), "faces_restored": restored,
               "persons_recreated": len(recreated), "persons_deleted": len(deleted),
               "churn": round(restored / total, 4) if total else 0.0}
    # The run undone names its rollback first: a rollback marked done is then always named.
    if undone:
        store.update_cluster_run(undone, {"rolled_back_by": own})
    store.update_cluster_run(own, {"status": "done", "finished_at": storage.now(),
                                   "summary": summary})
    return {"run_number": own, "rolled_back_run": undone, **summary}


def _give_back_corrections(store: Store, snapshot: Doc) -> None:
    """A recreated person's records of "not this face" and "not the same people", where
    they can still apply; the copies the run passed on to its heir go (those the heir held
    before the run stay)."""
    person_id, heir = snapshot["_id"], snapshot.get("heir", "")
    rejected = list(snapshot.get("rejections", []))
    for face in store.faces_with_ids(rejected):
        if face["person_id"] != person_id:
            store.add_rejection(face["_id"], person_id)
    for other in snapshot.get("not_same", []):
        if store.find_person(other) is not None:
            store.add_not_same(person_id, other)
    if not heir:
        return
    for face_id in set(rejected) - set(snapshot.get("heir_rejections", [])):
        store.remove_rejection(face_id, heir)
    for other in set(snapshot.get("not_same", [])) - set(snapshot.get("heir_not_same", [])):
        if other != heir:
            store.remove_not_same(heir, other)


def repair_rollback(store: Store, own: int) -> None:
    """After a killed rollback: finish it if its run document was written, else remove the
    records it left (nothing was moved yet: re-issuing it starts afresh)."""
    run = store.find_cluster_run(own)
    if run is None:
        store.delete_run_records(own)
        return
    undone = store.find_cluster_run(int(run.get("rollback_of") or 0)) or {}
    if run["status"] == "running" or undone.get("rolled_back_by") != own:
        finish_rollback(store, own)
