"""Rolling back a re-clustering run: every face it moved back where it was.

A rollback is itself a run (:mod:`services.runs`): ``kind: "rollback"``, ``rollback_of: n``,
one ``cluster_run_moves`` document per face it puts back, and the run it undid names it in
``rolled_back_by``. It holds the re-clustering lock and is journalled (op ``rollback``):
:func:`repair` finishes one whose record is whole, or removes a partial record (nothing was
moved yet: re-issuing it starts afresh).
"""

from __future__ import annotations

import typing as t

from errors import ConflictError
from services import bookkeeping
from services import runs
from services import storage
from services.storage import Store

Doc = dict[str, t.Any]

#: Conflicting faces named in a 409 (``total`` says how many there are).
CONFLICTS_NAMED = 50
#: Faces whose later change does not stop a rollback: it wants them where they are now.
_ROLLBACK_VIA = "rollback"


def undo_run(store: Store, number: int, *, force: bool = False, by: str = "") -> Doc:
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
    run = runs.find_run(store, number)
    _check_can_roll_back(run)
    holder = storage.new_id()
    if not store.acquire_lock(bookkeeping.RECLUSTER_LOCK, holder, 900.0):
        raise ConflictError("A re-clustering or rollback is running; try again when it ends")
    try:
        run = runs.find_run(store, number)  # rolled back by another request while we waited?
        _check_can_roll_back(run)
        moves, conflicts = _rollback_plan(store, run)
        if conflicts and not force:
            raise ConflictError(
                f"{len(conflicts)} face(s) changed since run {number}; roll back with "
                "force=true to leave them where they are and restore the rest",
                details={"conflicts": conflicts[:CONFLICTS_NAMED], "total": len(conflicts)})
        own = store.next_seq(runs.RUN_COUNTER)
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
            result = finish(store, own)
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


#: What a person's snapshot holds beside the person itself (its corrections and its heir's).
_SNAPSHOT_EXTRAS = frozenset({"rejections", "not_same", "heir", "heir_rejections",
                              "heir_not_same"})


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


def finish(store: Store, own: int) -> Doc:
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
            person = {k: v for k, v in snapshot.items() if k not in _SNAPSHOT_EXTRAS}
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


def repair(store: Store, own: int) -> None:
    """After a killed rollback: finish it if its run document was written, else remove the
    records it left (nothing was moved yet: re-issuing it starts afresh)."""
    run = store.find_cluster_run(own)
    if run is None:
        store.delete_run_records(own)
        return
    undone = store.find_cluster_run(int(run.get("rollback_of") or 0)) or {}
    if run["status"] == "running" or undone.get("rolled_back_by") != own:
        finish(store, own)
