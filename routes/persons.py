"""Persons: the people found in the photos, with their faces and images."""

from __future__ import annotations

import typing as t

from apiflask import APIBlueprint

from routes import schemas
from routes.common import gallery
from routes.common import ok
from routes.common import send_bytes
from routes.images import JPEG
from routes.schemas import envelope
from services import corrections
from services import curation
from services import people
from services import profiles

bp = APIBlueprint("persons", __name__, tag="Persons")


@bp.get("/")
@bp.input(schemas.PersonListQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.PersonPage))
def list_persons(query: dict[str, t.Any]):
    """Persons, most faces first; sorted by name or creation, filtered by name prefix.

    Hidden persons are left out unless `include_hidden=true`; `favorite=true` lists
    favorites only.
    """
    result = people.list_persons(gallery().store, sort=query["sort"],
                                 order=query.get("order"), q=query["q"],
                                 limit=query["limit"], offset=query["offset"],
                                 include_hidden=query["include_hidden"],
                                 favorite=query["favorite"])
    return ok(result, "Persons retrieved successfully")


@bp.get('/<id("suggestions"):person_id>')
@bp.input(schemas.PageQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.PersonDetail))
def get_person(person_id: str, query: dict[str, t.Any]):
    """One person with a page (`limit`/`offset`) of its faces and of its images."""
    return ok(people.get_person(gallery().store, person_id, limit=query["limit"],
                                offset=query["offset"]), "Person retrieved successfully")


@bp.put("/<person_id>/rename")
@bp.input(schemas.RenameBody, arg_name="body")
@bp.output(envelope(schemas.Renamed))
def rename_person(person_id: str, body: dict[str, t.Any]):
    """Rename a person (1-100 characters after trimming)."""
    return ok(people.rename_person(gallery().store, person_id, body["name"]),
              "Person renamed successfully")


@bp.put("/<person_id>/merge")
@bp.input(schemas.MergeBody, arg_name="body")
@bp.output(envelope(schemas.Merged))
@bp.doc(responses={409: "two faces of one photo would end in one person, a face would go "
                        "back into a person it was rejected from, persons marked not-same "
                        "without `force`, or a re-clustering is running"})
def merge_persons(person_id: str, body: dict[str, t.Any]):
    """Move every face of `source_person_ids` into this person and delete the sources."""
    result = people.merge_persons(gallery().store, person_id, body["source_person_ids"],
                                  force=body["force"])
    return ok(result, "Persons merged successfully")


@bp.get("/<person_id>/thumbnail")
@bp.output(JPEG, content_type="image/jpeg", description="The crop of the best face")
@bp.doc(responses={304: "not modified"})
def get_person_thumbnail(person_id: str):
    """The JPEG crop of the person's best-quality face."""
    data, mime_type, etag = people.person_thumbnail(gallery().store, person_id)
    return send_bytes(data, mime_type, etag, max_age=300)


@bp.post("/<person_id>/not-same")
@bp.input(schemas.NotSameBody, arg_name="body")
@bp.output(envelope(schemas.NotSame))
def mark_not_same(person_id: str, body: dict[str, t.Any]):
    """Not the same people: re-clustering never joins them; merging them needs `force`."""
    return ok(corrections.mark_not_same(gallery().store, person_id, body["other_person_id"]),
              "Persons marked as different people")


@bp.delete("/<person_id>/not-same/<other_id>")
@bp.output(envelope(schemas.NotSame))
def forget_not_same(person_id: str, other_id: str):
    """Forget that two persons are different people."""
    return ok(corrections.forget_not_same(gallery().store, person_id, other_id),
              "Not-same record forgotten")


# -- merge suggestions (issue 14) ---------------------------------------------------------
# "suggestions" is reserved in get_person's rule, so this path is never read as a person id.

@bp.get("/suggestions")
@bp.input(schemas.SuggestionPairsQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.SuggestedPairs))
def list_suggested_pairs(query: dict[str, t.Any]):
    """Pairs of persons most likely the same, closest first (average-linkage distance)."""
    return ok(curation.suggest_pairs(gallery(), limit=query["limit"],
                                     max_distance=query["max_distance"]),
              "Merge suggestions retrieved successfully")


@bp.get("/<person_id>/suggestions")
@bp.input(schemas.SuggestionQuery, location="query", arg_name="query")
@bp.output(envelope(schemas.Suggestions))
def list_person_suggestions(person_id: str, query: dict[str, t.Any]):
    """Persons most likely the same as this one, closest first (average-linkage distance)."""
    return ok(curation.suggest_for_person(gallery(), person_id, limit=query["limit"],
                                          max_distance=query.get("max_distance")),
              "Merge suggestions retrieved successfully")


@bp.put('/<id("suggestions"):person_id>')
@bp.input(schemas.PersonUpdate, arg_name="body")
@bp.output(envelope(schemas.Person))
def update_person(person_id: str, body: dict[str, t.Any]):
    """Set any of a person's name, `hidden`, `favorite`, `birth_date` and `cover_face_id`."""
    return ok(profiles.update_person(gallery().store, person_id, body),
              "Person updated successfully")
