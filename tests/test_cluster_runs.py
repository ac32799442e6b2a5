"""Re-clustering runs (issue 16): the dry run writes nothing, every run is recorded, and a
rollback puts back exactly what a run changed, or says which later changes stop it."""

from __future__ import annotations

import pytest

from app import create_app
from services import runs
from services.storage import COLLECTIONS
from tests import photos
from tests.conftest import BASE_CONFIG
from tests.conftest import assert_error
from tests.conftest import upload
from tests.invariants import check_invariants

#: Everything a gallery holds, including what a reset keeps and the journal.
EVERY_COLLECTION = (*COLLECTIONS, "gallery", "intents", "processes")


def dump(store) -> dict[str, list[str]]:
    """Every document of every collection, as text, in ``_id`` order."""
    return {name: sorted(repr(sorted(doc.items())) for doc in store.db[name].find({}))
            for name in EVERY_COLLECTION}


def assignment(store) -> dict:
    """Each face's person and manual flag, and each person's id, name and counts."""
    faces = {f["_id"]: (f["person_id"], bool(f.get("is_manual_assignment")))
             for f in store.iter_faces({}, {"person_id": 1, "is_manual_assignment": 1})}
    persons = {p["_id"]: (p["name"], p["face_count"], p["image_count"],
                          p.get("manual_face_count", 0)) for p in store.iter_persons()}
    return {"faces": faces, "persons": persons}


@pytest.fixture
def split_gallery(client):
    """Eileen three times and Grace once, where a user put one Eileen in a person of her
    own ("Not Eileen") and Grace in with Eileen: a run without preserve_manual undoes both,
    deleting "Not Eileen" and creating a person for Grace."""
    a1 = upload(client, photos.astronaut_jpeg())
    upload(client, photos.mirrored(photos.astronaut_rgb()))
    a3 = upload(client, photos.scaled(photos.astronaut_rgb(), 0.85))
    h = upload(client, photos.hopper_jpeg())
    eileen = a1["faces"][0]["person_id"]
    client.put(f"/persons/{eileen}/rename", json={"name": "Eileen"})
    lookalike = a3["faces"][0]["face_id"]
    split = client.put(f"/faces/{lookalike}/move-to-new",
                       json={"new_person_name": "Not Eileen"}).json["data"]
    grace = h["faces"][0]["face_id"]
    client.put(f"/faces/{grace}/move", json={"target_person_id": eileen})
    return {"eileen": eileen, "not_eileen": split["new_person_id"], "lookalike": lookalike,
            "grace": grace}


def test_a_dry_run_changes_nothing_and_tells_what_would(client, store, split_gallery):
    before = dump(store)
    answer = client.post("/cluster/?dry_run=true&preserve_manual=false")
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert dump(store) == before  # byte for byte: not even a counter or a lock
    assert data["dry_run"] is True and "run_number" not in data
    assert data["churn"] == 0.5 and data["faces_moved"] == 2
    eileen, not_eileen = split_gallery["eileen"], split_gallery["not_eileen"]
    assert sorted(data["moves"], key=lambda m: m["face_id"]) == sorted([
        {"face_id": split_gallery["lookalike"], "from_person_id": not_eileen,
         "to_person_id": eileen},
        {"face_id": split_gallery["grace"], "from_person_id": eileen, "to_person_id": "new:1"},
    ], key=lambda m: m["face_id"])
    diff = data["diff"]
    assert diff["persons_created"] == [{"person_id": "new:1", "face_count": 1}]
    assert diff["persons_deleted"] == [{"person_id": not_eileen, "name": "Not Eileen"}]
    assert diff["persons_split"] == [{"person_id": eileen, "name": "Eileen",
                                      "into": sorted([eileen, "new:1"])}]
    assert diff["persons_merged"] == [{"person_id": eileen, "name": "Eileen",
                                       "from_person_ids": [not_eileen]}]
    named = {p["name"]: p for p in diff["named_persons_affected"]}
    assert named["Eileen"]["faces_lost"] == 1 and named["Eileen"]["faces_gained"] == 1
    assert named["Not Eileen"]["deleted"] is True
    assert diff["counts"]["faces_moved"] == 2

    # The same in a JSON body, paged; the query and body forms agree.
    page = client.post("/cluster/", json={"dry_run": True, "preserve_manual": False,
                                          "moves_limit": 1, "moves_offset": 1}).json["data"]
    assert page["moves_total"] == 2 and len(page["moves"]) == 1
    assert page["moves"][0] in data["moves"] and page["diff"] == diff
    assert_error(client.post("/cluster/", json={"dry_run": True, "moves_limit": 0}), 400,
                 "ValidationError")
    assert dump(store) == before
    # What the dry run said is what the run does.
    done = client.post("/cluster/?preserve_manual=false").json["data"]
    assert done["faces_moved"] == 2 and done["churn"] == 0.5
    recorded = client.get(f"/cluster/runs/{done['run_number']}").json["data"]
    assert recorded["summary"]["diff"]["counts"] == diff["counts"]


def test_a_dry_run_as_a_job_holds_the_diff(store, tmp_path):
    app = create_app({**BASE_CONFIG, "DATA_DIR": str(tmp_path / "data")}, store=store,
                     environ={})
    app.extensions["face_gallery"].queue.immediate = True
    try:
        with app.test_client() as client:
            upload(client, photos.astronaut_jpeg())
            face = upload(client, photos.mirrored(photos.astronaut_rgb()))["faces"][0]
            client.put(f"/faces/{face['face_id']}/move-to-new")
            before = {name: dump(store)[name] for name in ("faces", "persons", "counters")}
            queued = client.post("/cluster/?async=true",
                                 json={"dry_run": True, "preserve_manual": False})
            assert queued.status_code == 202, queued.json
            job = client.get(f"/jobs/{queued.json['data']['job_id']}").json["data"]
            assert job["status"] == "done", job
            assert job["result"]["dry_run"] is True and job["result"]["moves_total"] == 1
            assert job["result"]["churn"] == 0.5
            assert {name: dump(store)[name] for name in before} == before
            assert client.get("/cluster/runs").json["data"]["total"] == 0
            # A real run as a job is recorded like any other.
            queued = client.post("/cluster/?async=true", json={"preserve_manual": False})
            job = client.get(f"/jobs/{queued.json['data']['job_id']}").json["data"]
            [run] = client.get("/cluster/runs").json["data"]["runs"]
            assert run["number"] == job["result"]["run_number"]
            assert run["by"] == "anonymous" and run["status"] == "done"
        check_invariants(store)
    finally:
        app.extensions["face_gallery"].close()


def test_rollback_restores_the_exact_previous_assignment(client, store, split_gallery):
    before = assignment(store)
    not_eileen = store.find_person(split_gallery["not_eileen"])
    done = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    assert done["persons_deleted"] == 1 and done["persons_created"] == 1
    assert store.find_person(split_gallery["not_eileen"]) is None
    moved = store.get_face(split_gallery["grace"])
    assert (moved["assigned_via"], moved["assigned_run"]) == ("recluster", done["run_number"])

    rolled = client.post(f"/cluster/runs/{done['run_number']}/rollback")
    assert rolled.status_code == 200, rolled.json
    data = rolled.json["data"]
    assert data["rolled_back_run"] == done["run_number"] and data["faces_restored"] == 2
    assert data["persons_recreated"] == 1 and data["persons_deleted"] == 1
    assert assignment(store) == before
    back = store.find_person(split_gallery["not_eileen"])
    assert {k: back[k] for k in ("name", "number", "named_by_user", "created_at")} == {
        k: not_eileen[k] for k in ("name", "number", "named_by_user", "created_at")}
    # The person itself, without what the snapshot kept beside it (corrections, heir).
    assert not {"rejections", "not_same", "heir", "heir_rejections",
                "heir_not_same"} & set(back)
    face = store.get_face(split_gallery["lookalike"])
    assert (face["assigned_via"], face["assigned_run"]) == ("rollback", data["run_number"])
    check_invariants(store)
    # Faces are read one by one when few, in one pass when many: the same answer.
    ids = [split_gallery["lookalike"], split_gallery["grace"], "5f0c0c0c0c0c0c0c0c0c0c0c"]
    assert store.faces_for_rollback(ids, one_by_one=0) == store.faces_for_rollback(ids)
    assert set(store.faces_for_rollback(ids)) == set(ids[:2])

    # Recorded: the rollback is a run of its own, and the run names it.
    listed = client.get("/cluster/runs").json["data"]["runs"]
    assert [(r["number"], r["kind"]) for r in listed] == [
        (data["run_number"], "rollback"), (done["run_number"], "recluster")]
    assert listed[1]["rolled_back_by"] == data["run_number"]
    assert listed[0]["rollback_of"] == done["run_number"]
    # Once only; a rollback is not rolled back.
    assert_error(client.post(f"/cluster/runs/{done['run_number']}/rollback"), 409,
                 "ConflictError")
    assert_error(client.post(f"/cluster/runs/{data['run_number']}/rollback"), 409,
                 "ConflictError")


def test_a_later_change_stops_the_rollback_unless_forced(client, store, split_gallery):
    done = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    lookalike = split_gallery["lookalike"]
    # The user moves one face the run moved: its rollback would undo the user's decision.
    client.put(f"/faces/{lookalike}/move-to-new", json={"new_person_name": "Someone"})
    after_move = assignment(store)
    refused = client.post(f"/cluster/runs/{done['run_number']}/rollback")
    assert_error(refused, 409, "ConflictError")
    details = refused.json["details"]
    assert details["total"] == 1
    assert details["conflicts"][0]["face_id"] == lookalike
    assert details["conflicts"][0]["reason"] == "moved"
    assert assignment(store) == after_move  # refused before any write

    forced = client.post(f"/cluster/runs/{done['run_number']}/rollback?force=true")
    assert forced.status_code == 200, forced.json
    data = forced.json["data"]
    assert data["faces_restored"] == 1 and data["faces_skipped"] == 1
    assert data["skipped"][0]["face_id"] == lookalike
    # Grace is back with Eileen, by hand as before; the user's move stays.
    grace = store.get_face(split_gallery["grace"])
    assert grace["person_id"] == split_gallery["eileen"] and grace["is_manual_assignment"]
    assert store.get_face(lookalike)["person_id"] == after_move["faces"][lookalike][0]


def test_a_deleted_face_is_a_conflict_too(client, store):
    a1 = upload(client, photos.astronaut_jpeg())
    a2 = upload(client, photos.mirrored(photos.astronaut_rgb()))
    client.put(f"/faces/{a2['faces'][0]['face_id']}/move-to-new")
    done = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    assert done["faces_moved"] == 1
    client.delete(f"/images/{a2['image_id']}")
    refused = client.post(f"/cluster/runs/{done['run_number']}/rollback")
    assert_error(refused, 409, "ConflictError")
    assert refused.json["details"]["conflicts"][0]["reason"] == "deleted"
    forced = client.post(f"/cluster/runs/{done['run_number']}/rollback?force=true").json["data"]
    assert forced["faces_restored"] == 0 and forced["faces_skipped"] == 1
    assert store.count("persons") == 1
    assert store.find_person(a1["faces"][0]["person_id"]) is not None


def test_runs_are_listed_newest_first_and_paged(client, store):
    upload(client, photos.astronaut_jpeg())
    numbers = [client.post("/cluster/").json["data"]["run_number"] for _ in range(3)]
    assert numbers == [1, 2, 3]
    first = client.get("/cluster/runs?limit=2").json["data"]
    assert first["total"] == 3 and [r["number"] for r in first["runs"]] == [3, 2]
    rest = client.get("/cluster/runs?limit=2&offset=2").json["data"]
    assert [r["number"] for r in rest["runs"]] == [1]
    run = rest["runs"][0]
    assert run["kind"] == "recluster" and run["status"] == "done" and run["by"] == "anonymous"
    assert run["params"] == {"tolerance": 0.61, "min_samples": 1, "preserve_manual": True}
    assert run["summary"]["churn"] == 0.0 and run["summary"]["faces_processed"] == 1
    assert run["started_at"] <= run["finished_at"]
    detail = client.get("/cluster/runs/1?moves_limit=5").json["data"]
    assert detail["moves"] == [] and detail["moves_total"] == 0
    assert runs.RUN_COUNTER == "cluster_runs" and store.latest_cluster_run()["number"] == 3
    assert_error(client.get("/cluster/runs/99"), 404, "DocumentNotFoundError")
    assert_error(client.post("/cluster/runs/99/rollback"), 404, "DocumentNotFoundError")
    assert_error(client.get("/cluster/runs/1?moves_limit=0"), 400, "ValidationError")
    # A reset forgets the runs with the faces they moved.
    client.delete("/reset?confirm=true")
    assert client.get("/cluster/runs").json["data"]["total"] == 0
    assert store.latest_cluster_run() is None


def test_a_rollback_waits_for_no_running_recluster(client, store, split_gallery):
    done = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    assert store.acquire_lock("recluster", "someone-else", 600)
    assert_error(client.post(f"/cluster/runs/{done['run_number']}/rollback"), 409,
                 "ConflictError")
    store.release_lock("recluster", "someone-else")


def test_the_api_key_is_recorded_by_fingerprint(store):
    key = "k" * 20
    app = create_app({**BASE_CONFIG, "API_KEYS": key}, store=store, environ={})
    with app.test_client() as client:
        client.post("/cluster/", headers={"X-API-Key": key})
        [run] = client.get("/cluster/runs", headers={"X-API-Key": key}).json["data"]["runs"]
    assert run["by"].startswith("key:") and len(run["by"]) == 12 and key not in run["by"]


def test_a_face_of_the_same_photo_in_the_old_person_is_a_conflict(client, store,
                                                                   split_gallery):
    done = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    grace = split_gallery["grace"]
    image_id = store.get_face(grace)["image_id"]
    # Drawn by hand into Eileen after the run: Grace's photo now has a face in Eileen.
    drawn = client.post(f"/images/{image_id}/faces", json={
        "top": 10, "left": 10, "bottom": 60, "right": 60, "person_id": split_gallery["eileen"]})
    assert drawn.status_code == 201, drawn.json
    refused = client.post(f"/cluster/runs/{done['run_number']}/rollback")
    assert_error(refused, 409, "ConflictError")
    assert refused.json["details"]["conflicts"] == [
        {"face_id": grace, "reason": "same_photo", "person_id": split_gallery["eileen"]}]
    forced = client.post(f"/cluster/runs/{done['run_number']}/rollback?force=true").json["data"]
    assert forced["faces_restored"] == 1 and forced["skipped"][0]["face_id"] == grace


def test_the_command_records_its_run_and_previews_with_dry_run(app, client, store,
                                                               split_gallery):
    before = dump(store)
    preview = app.test_cli_runner().invoke(args=["gallery", "recluster", "--dry-run",
                                                 "--no-preserve-manual"])
    assert preview.exit_code == 0, preview.output
    assert '"dry_run": true' in preview.output and dump(store) == before
    done = app.test_cli_runner().invoke(args=["gallery", "recluster", "--no-preserve-manual"])
    assert done.exit_code == 0, done.output
    [run] = client.get("/cluster/runs").json["data"]["runs"]
    assert run["by"] == "cli" and run["params"]["preserve_manual"] is False


def test_a_dry_run_by_get_writes_nothing_either(client, store, split_gallery):
    before = dump(store)
    answer = client.get("/cluster/?dry_run=true&preserve_manual=false&moves_limit=1")
    assert answer.status_code == 200, answer.json
    assert answer.json["data"]["dry_run"] is True and len(answer.json["data"]["moves"]) == 1
    assert dump(store) == before


def test_a_face_moved_back_by_hand_is_done_not_a_conflict(client, store, split_gallery):
    done = client.post("/cluster/", json={"preserve_manual": False}).json["data"]
    grace = split_gallery["grace"]
    # The user puts Grace back with Eileen by hand: the run's number leaves the face.
    moved = client.put(f"/faces/{grace}/move", json={"target_person_id": split_gallery["eileen"]})
    assert moved.status_code == 200, moved.json
    face = store.get_face(grace)
    assert face["assigned_via"] == "move" and "assigned_run" not in face
    rolled = client.post(f"/cluster/runs/{done['run_number']}/rollback")
    assert rolled.status_code == 200, rolled.json
    assert store.get_face(grace)["person_id"] == split_gallery["eileen"]
