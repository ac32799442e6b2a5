"""Provenance of each assignment, quality figures (GET /stats/quality) and explained faces
(GET /faces/{id}/explain): the math on arrays, then the API on real faces, every backend."""

from __future__ import annotations

import numpy as np
import pytest

import config
from services import bookkeeping
from services import explanation
from services import quality
from services import storage
from services import suggestions
from services.context import Gallery
from tests import photos
from tests.conftest import MISSING
from tests.conftest import assert_error
from tests.conftest import search
from tests.conftest import upload


def face(client, face_id: str) -> dict:
    answer = client.get(f"/faces/{face_id}/info")
    assert answer.status_code == 200, answer.json
    return answer.json["data"]


def explain(client, face_id: str) -> dict:
    answer = client.get(f"/faces/{face_id}/explain")
    assert answer.status_code == 200, answer.json
    return answer.json["data"]


def figures(client, **query) -> dict:
    answer = client.get("/stats/quality", query_string=query)
    assert answer.status_code == 200, answer.json
    return answer.json["data"]


# -- the math -----------------------------------------------------------------------------

def test_same_photo_conflicts_are_counted_not_assumed():
    count, examples = quality.same_photo_conflicts(
        ["f1", "f2", "f3", "f4"], ["a", "a", "b", "a"], ["x", "y", "x", "x"])
    assert count == 1
    assert examples == [{"person_id": "a", "image_id": "x", "face_ids": ["f1", "f4"]}]
    assert quality.same_photo_conflicts(["f1", "f2"], ["a", "b"], ["x", "x"]) == (0, [])
    assert quality.same_photo_conflicts([], [], []) == (0, [])


def test_spread_is_the_mean_pairwise_distance_of_each_person():
    rng = np.random.default_rng(2)
    embeddings = rng.normal(size=(6, 128)) * 0.05
    labels = ["b", "a", "a", "b", "a", "c"]
    persons = suggestions.group(embeddings, labels)
    spread = quality.person_spread(persons)
    for person in ("a", "b"):
        rows = embeddings[[i for i, p in enumerate(labels) if p == person]]
        pairs = [np.linalg.norm(x - y) for i, x in enumerate(rows) for y in rows[i + 1:]]
        assert spread[persons.index_of(person)] == pytest.approx(np.mean(pairs))
    assert np.isnan(spread[persons.index_of("c")])


def _gallery(seed: int = 0, persons: int = 80) -> tuple[np.ndarray, list[str]]:
    """Persons of 1-6 faces around random centres; p000/p001 and p002/p003 near-duplicates."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(persons, 128)) * 0.05
    centres[1] = centres[0] + rng.normal(size=128) * 0.01
    centres[3] = centres[2] + rng.normal(size=128) * 0.015
    embeddings, labels = [], []
    for k, centre in enumerate(centres):
        for _ in range(rng.integers(1, 7)):
            embeddings.append(centre + rng.normal(size=128) * 0.02)
            labels.append(f"p{k:03d}")
    return np.array(embeddings), labels


def test_likely_duplicates_are_every_pair_within_the_radius(monkeypatch):
    persons = suggestions.group(*_gallery())
    left, right = (x.astype(np.intp) for x in np.triu_indices(len(persons.ids), k=1))
    assert np.allclose(quality.linkage(persons, left, right),
                       suggestions.linkage(persons, left, right))
    everything = suggestions.naive_pairs(persons, limit=10**6, max_distance=0.8)
    assert len(everything[2]) > 2  # the radius keeps more than the two near-duplicates
    monkeypatch.setattr(quality, "SPREAD_CELLS", 7)  # many column chunks: same answer
    found = quality.likely_duplicates(persons, max_distance=0.8)
    assert [x.tolist() for x in found[:2]] == [x.tolist() for x in everything[:2]]
    assert np.allclose(found[2], everything[2])
    kept = quality.likely_duplicates(persons, max_distance=0.8,
                                     excluded_pairs={("p001", "p000")})
    names = {frozenset(persons.ids[[a, b]]) for a, b in zip(*kept[:2], strict=True)}
    assert frozenset({"p000", "p001"}) not in names and frozenset({"p002", "p003"}) in names


# -- provenance ---------------------------------------------------------------------------

def test_every_kind_of_assignment_says_how(client):
    first = upload(client, photos.astronaut_jpeg(), "a.jpg")["faces"][0]
    second = upload(client, photos.mirrored(photos.astronaut_rgb()), "b.jpg")["faces"][0]
    hopper = upload(client, photos.hopper_jpeg(), "h.jpg")["faces"][0]
    shown = face(client, first["face_id"])
    assert (shown["assigned_by"], shown["assigned_via"]) == ("auto", "upload")
    assert "assigned_run" not in shown

    assert client.put(f"/faces/{hopper['face_id']}/confirm").status_code == 200
    assert face(client, hopper["face_id"])["assigned_via"] == "confirm"

    moved = client.put(f"/faces/{second['face_id']}/move-to-new").json["data"]
    assert face(client, second["face_id"])["assigned_via"] == "move"

    merged = client.put(f"/persons/{first['person_id']}/merge",
                        json={"source_person_ids": [moved["new_person_id"]]})
    assert merged.status_code == 200, merged.json
    shown = face(client, second["face_id"])
    assert (shown["assigned_by"], shown["assigned_via"]) == ("manual", "merge")

    blank = upload(client, photos.blank_jpeg(), "blank.jpg")
    drawn = client.post(f"/images/{blank['image_id']}/faces",
                        json={"top": 10, "right": 60, "bottom": 60, "left": 10})
    assert drawn.status_code == 201, drawn.json
    assert drawn.json["data"]["assigned_via"] == "drawn"
    person = client.get(f"/persons/{first['person_id']}").json["data"]
    assert {f["assigned_via"] for f in person["faces"]} == {"upload", "merge"}


def test_faces_stored_before_provenance_read_as_upload_or_move(client, store):
    first = upload(client, photos.astronaut_jpeg())["faces"][0]
    store.db.faces.update_one({"_id": first["face_id"]}, {"$unset": {"assigned_via": ""}})
    assert face(client, first["face_id"])["assigned_via"] == "upload"
    store.db.faces.update_one({"_id": first["face_id"]},
                              {"$set": {"assigned_by": "manual", "is_manual_assignment": True}})
    assert face(client, first["face_id"])["assigned_via"] == "move"
    store.db.faces.update_one({"_id": first["face_id"]},
                              {"$set": {"assigned_by": "auto", "is_manual_assignment": False}})


def test_a_runs_number_is_shown_with_its_assignment(client, store):
    first = upload(client, photos.astronaut_jpeg())["faces"][0]
    store.set_face_person(first["face_id"], first["person_id"], manual=False, via="recluster",
                          run=3)
    shown = face(client, first["face_id"])
    assert (shown["assigned_via"], shown["assigned_run"]) == ("recluster", 3)
    store.set_face_person(first["face_id"], first["person_id"], manual=False, via="upload")
    shown = face(client, first["face_id"])
    assert shown["assigned_via"] == "upload" and "assigned_run" not in shown


# -- quality figures ----------------------------------------------------------------------

def test_quality_of_an_empty_gallery(client):
    data = figures(client)
    assert data["faces_total"] == 0 and data["same_photo_conflicts"] == 0
    assert data["likely_duplicate_persons"]["count"] == 0
    assert data["spread"]["mean"] is None and data["churn_last_run"] is None
    assert data["manual_share"] == 0.0


def test_quality_figures_of_a_small_gallery(client, store):
    group = upload(client, photos.group_photo(), "group.jpg")
    single = upload(client, photos.astronaut_jpeg(), "a.jpg")["faces"][0]
    mirrored = upload(client, photos.mirrored(photos.astronaut_rgb()), "m.jpg")["faces"][0]
    upload(client, photos.hopper_jpeg(), "h.jpg")
    assert len(group["faces"]) == 2
    data = figures(client)
    assert data["faces_total"] == 5 and data["persons_total"] == 2
    assert data["same_photo_conflicts"] == 0  # the group photo's faces are two persons
    assert data["faces_unassigned"] == 0 and data["persons_of_one_face"] == 0
    assert data["likely_duplicate_persons"]["count"] == 0
    assert data["spread"]["persons_measured"] == 2 and data["spread"]["mean"] < 0.59
    assert data["manual_share"] == 0.0 and data["cached"] is False
    assert figures(client)["cached"] is True  # nothing changed

    # The known duplicate: one of Eileen Collins' faces moved into a person of its own.
    moved = client.put(f"/faces/{mirrored['face_id']}/move-to-new").json["data"]
    stale = figures(client, max_age=3600)
    assert stale["cached"] is True and stale["up_to_date"] is False
    assert stale["likely_duplicate_persons"]["count"] == 0  # as computed before the move
    data = figures(client, limit=1)
    assert data["cached"] is False and data["up_to_date"] is True
    duplicates = data["likely_duplicate_persons"]
    assert duplicates["count"] == 1 and duplicates["threshold"] == 0.61
    [pair] = duplicates["pairs"]
    assert {pair["person_id"], pair["other_person_id"]} == {single["person_id"],
                                                            moved["new_person_id"]}
    assert 0 < pair["distance"] <= 0.61
    assert data["persons_of_one_face"] == 1 and data["persons_total"] == 3
    assert data["manual_assignments"] == 1 and data["manual_share"] == 0.2
    assert len(data["spread"]["worst"]) == 1
    # Marked different people: no longer a likely duplicate.
    client.post(f"/persons/{single['person_id']}/not-same",
                json={"other_person_id": moved["new_person_id"]})
    assert figures(client)["likely_duplicate_persons"]["count"] == 0


def test_the_churn_of_the_last_run_is_reported(client, store):
    # The newest finished re-clustering counts: not a rollback, not an interrupted run.
    done = {"kind": "recluster", "status": "done"}
    store._insert("cluster_runs", [
        {"_id": "a" * 24, "number": 1, "summary": {"churn": 0.5}, **done},
        {"_id": "b" * 24, "number": 2, "summary": {"churn": 0.25}, **done},
        {"_id": "c" * 24, "number": 3, "summary": {"churn": 0.9}, "kind": "recluster",
         "status": "interrupted"},
        {"_id": "d" * 24, "number": 4, "summary": {"churn": 0.7}, "kind": "rollback",
         "status": "done", "rollback_of": 2}])
    data = figures(client)
    assert data["churn_last_run"] == 0.25 and data["last_run"] == {"number": 2, "churn": 0.25}
    store.db.cluster_runs.delete_many({})


def test_quality_limit_is_checked(client):
    assert_error(client.get("/stats/quality?limit=0"), 400, "ValidationError")
    assert_error(client.get("/stats/quality?limit=101"), 400, "ValidationError")


# -- explained faces ----------------------------------------------------------------------

def test_an_assigned_face_is_explained(client):
    group = upload(client, photos.group_photo(), "group.jpg")
    single = upload(client, photos.mirrored(photos.astronaut_rgb()), "m.jpg")["faces"][0]
    hopper = upload(client, photos.hopper_jpeg(), "h.jpg")["faces"][0]
    data = explain(client, single["face_id"])
    assert data["status"] == "assigned" and data["person_id"] == single["person_id"]
    assert data["provenance"]["assigned_via"] == "upload"
    assert data["provenance"]["assigned_by"] == "auto" and data["provenance"]["assigned_at"]
    assert data["linkage"] == "average" and data["threshold"] == 0.59
    assert 0 < data["distance"] <= 0.59 and data["within_threshold"] is True
    assert data["assignment_today"]["person_id"] == single["person_id"]
    assert data["assignment_today"]["same_person"] is True
    in_group = next(f for f in group["faces"] if f["person_id"] == single["person_id"])
    assert [f["face_id"] for f in data["nearest_in_person"]] == [in_group["face_id"]]
    assert data["nearest_in_person"][0]["distance"] == data["distance"]  # one other face
    runner = data["runner_up"]
    assert runner["person_id"] == hopper["person_id"] and runner["distance"] > 0.59
    assert runner["within_threshold"] is False and runner["blocked_by"] == []
    assert len(runner["nearest_faces"]) == 2
    assert data["constraints"]["same_photo"] == [] and data["constraints"]["rejected_from"] == []
    assert "would put it there today" in data["reason"]

    # A face of the group photo: the other person is blocked by the photo.
    grouped = explain(client, in_group["face_id"])
    assert grouped["constraints"]["blocked_persons"] == [
        {"person_id": hopper["person_id"], "reasons": ["same_photo"]}]
    assert grouped["runner_up"]["blocked_by"] == ["same_photo"]


def test_a_face_alone_is_explained_with_the_nearest_person(client):
    first = upload(client, photos.astronaut_jpeg(), "a.jpg")["faces"][0]
    hopper = upload(client, photos.hopper_jpeg(), "h.jpg")["faces"][0]
    data = explain(client, hopper["face_id"])
    assert data["status"] == "alone" and data["distance"] is None
    assert data["within_threshold"] is None and data["nearest_in_person"] == []
    assert data["assignment_today"]["person_id"] is None
    assert data["runner_up"]["person_id"] == first["person_id"]
    assert data["runner_up"]["distance"] > data["threshold"]
    assert "over the threshold" in data["reason"]


def test_a_rejected_face_names_its_rejection(client):
    first = upload(client, photos.astronaut_jpeg(), "a.jpg")["faces"][0]
    second = upload(client, photos.mirrored(photos.astronaut_rgb()), "b.jpg")["faces"][0]
    rejected = client.put(f"/faces/{second['face_id']}/reject", json={})
    assert rejected.status_code == 200, rejected.json
    data = explain(client, second["face_id"])
    assert data["status"] == "alone"
    assert data["constraints"]["rejected_from"] == [first["person_id"]]
    assert data["runner_up"]["person_id"] == first["person_id"]
    assert data["runner_up"]["within_threshold"] is True
    assert data["runner_up"]["blocked_by"] == ["rejected"]
    assert data["assignment_today"]["person_id"] is None  # the rule honours the rejection
    assert "blocked" in data["reason"]


def test_explain_unknown_or_malformed_face(client):
    assert_error(client.get(f"/faces/{MISSING}/explain"), 404, "DocumentNotFoundError")
    assert_error(client.get("/faces/nope/explain"), 400, "ValidationError")
    assert_error(client.get(f"/faces/{MISSING}/explain?limit=0"), 400, "ValidationError")


def test_search_matches_carry_distance_and_threshold(client):
    upload(client, photos.astronaut_jpeg())
    hits = search(client, photos.mirrored(photos.astronaut_rgb()), tolerance="0.55")
    assert hits["matches"]
    for match in hits["matches"]:
        assert match["threshold"] == 0.55 and match["distance"] <= match["threshold"]


def test_a_face_without_person_is_counted_and_explained(store):
    """No request leaves a face without a person (the invariants forbid it), so one is
    written straight into the store: the figures count it and explain says where it would go."""
    rng = np.random.default_rng(4)
    centre = rng.normal(size=128) * 0.05
    person = bookkeeping.new_person_doc(store, face_count=2)
    store.insert_persons([person])
    moment = storage.now()

    def face_doc(person_id: str, seq: int) -> dict:
        return {"_id": storage.new_id(), "seq": seq, "image_id": storage.new_id(),
                "person_id": person_id, "face_location": {"top": 0, "right": 9, "bottom": 9,
                                                          "left": 0},
                "embedding": storage.embedding_to_bytes(centre + rng.normal(size=128) * 0.01),
                "is_manual_assignment": False, "assigned_by": "auto", "created_at": moment,
                "updated_at": moment}

    faces = [face_doc(person["_id"], 1), face_doc(person["_id"], 2), face_doc("", 3)]
    store._insert("faces", faces)
    gallery = Gallery(config.load_config({"FLASK_ENV": "testing"}, environ={}), store=store)
    figures_now = quality.quality_figures(gallery)
    assert figures_now["faces_unassigned"] == 1 and figures_now["faces_total"] == 3
    assert figures_now["persons_total"] == 1 and figures_now["same_photo_conflicts"] == 0
    data = explanation.explain_face(gallery, faces[2]["_id"])
    assert data["status"] == "unassigned" and data["person_id"] is None
    assert data["distance"] is None and data["nearest_in_person"] == []
    assert data["assignment_today"]["person_id"] == person["_id"]
    assert data["runner_up"]["person_id"] == person["_id"]
    assert len(data["runner_up"]["nearest_faces"]) == 2
    assert data["reason"].startswith("The face has no person. The rule would put it in")
