"""The request and response schemas: what each route accepts and answers.

They are the one source of truth for both sides of the contract: apiflask validates every
request against the input schemas before a view runs (a failure is a 400 ``ValidationError``
in the error envelope) and builds ``/openapi.json`` from the same classes. Response schemas
only document: views answer with :func:`routes.common.ok`, and the suite (schemathesis, and
``tests/test_openapi.py``) checks the answers against them.

Request schemas refuse unknown fields (``unknown = RAISE``), so a typo is a 400 on create and
update alike; query strings and multipart forms ignore them, as browsers and proxies add their
own. Response schemas allow more fields than they list: a new field is not a breaking change.
"""

from __future__ import annotations

import typing as t
from datetime import UTC
from datetime import datetime

from apiflask import Schema
from apiflask import fields
from apiflask import validators
from marshmallow import EXCLUDE
from marshmallow import INCLUDE
from marshmallow import RAISE
from marshmallow import ValidationError as SchemaError
from marshmallow import validates_schema

from services import text

MAX_LIMIT = 500
#: services.people.ASSIGNED_VIA, spelled here: schemas import no service but text.
ASSIGNED_VIA = ("upload", "move", "merge", "confirm", "drawn", "import", "recluster",
                "rollback")
#: Moved faces a run's or a dry run's answer lists at most per page.
MAX_MOVES_LIMIT = 1000
#: The change schemas, documented with ``minProperties: 1`` (routes.contract).
UPDATES = ("ImageUpdate", "AlbumUpdate", "SectionUpdate", "PersonUpdate")
JOB_STATUSES = ("receiving", "queued", "running", "done", "failed", "cancelled")
RESET_WARNING = ("Reset deletes every image, face, person, album and section: confirm with "
                 "?confirm=true")
#: Ids are 24 hex digits (storage.new_id; either case); anything else is a 400.
ID_PATTERN = r"^[0-9a-fA-F]{24}$"
#: No character services.text refuses (controls, invisible format characters, separators),
#: and for a name some visible character. The patterns hold for the Basic Multilingual Plane;
#: the service checks the rest.
_REFUSED = text.refused_class()[1:-1]
NAME_PATTERN = rf"^[^{_REFUSED}]*[^\s{_REFUSED}][^{_REFUSED}]*$"
LINE_PATTERN = rf"^[^{_REFUSED}]*$"
TEXT_PATTERN = rf"^[^{text.refused_class(multiline=True)[1:-1]}]*$"


# -- fields ---------------------------------------------------------------------------------

def _text(max_length: int, *, multiline: bool = False, **kwargs: t.Any) -> fields.String:
    """Free text: at most ``max_length`` characters, none of them a control character (a
    multi-line text may hold line feeds and tabs)."""
    pattern = TEXT_PATTERN if multiline else LINE_PATTERN
    return fields.String(validate=[validators.Length(max=max_length), validators.Regexp(
        pattern, error="Must not contain control characters.")], **kwargs)


def _name(max_length: int, **kwargs: t.Any) -> fields.String:
    """A display name: 1-``max_length`` characters after trimming, no control characters."""
    return fields.String(validate=[validators.Length(min=1, max=max_length), validators.Regexp(
        NAME_PATTERN, error="Must have a visible character and no control characters.")],
        metadata={"description": f"1-{max_length} characters after trimming; no control "
                                 "characters"}, **kwargs)


class Flag(fields.Boolean):
    """A JSON boolean: true or false, never 0, 1, "yes" or "on"."""

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


class WholeNumber(fields.Integer):
    """A JSON integer: 216 and 216.0 (JSON Schema's integers), never 1.5, which a plain
    Integer field would truncate to 1."""

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any) -> int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(value, attr, data, **kwargs)


class QueryDate(fields.String):
    """An ISO-8601 date or datetime, as naive UTC; a bare date in ``date_to`` means its end."""

    def __init__(self, *, end_of_day: bool = False, **kwargs: t.Any) -> None:
        kwargs.setdefault("metadata", {})["anyOf"] = [{"format": "date"},
                                                       {"format": "date-time"}]
        super().__init__(**kwargs)
        self.end_of_day = end_of_day

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any,
                     **kwargs: t.Any) -> datetime | None:
        raw = super()._deserialize(value, attr, data, **kwargs).upper()
        try:
            if raw[17:19] == "60":  # a leap second (RFC 3339 allows it; Python does not)
                raw = raw[:17] + "59" + raw[19:]
            moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
        except (ValueError, OverflowError):
            raise SchemaError("Must be an ISO-8601 date such as 2024-06-30.") from None
        if self.end_of_day and len(raw) == 10:
            moment = moment.replace(hour=23, minute=59, second=59, microsecond=999000)
        return moment


def _id(description: str = "", **kwargs: t.Any) -> fields.String:
    return fields.String(validate=validators.Regexp(ID_PATTERN, error="Must be a 24-hex id."),
                         metadata={"description": description,
                                   "example": "5f0c0c0c0c0c0c0c0c0c0c0c"}, **kwargs)


def _limit(default: int = 50, maximum: int = MAX_LIMIT) -> fields.Integer:
    return fields.Integer(load_default=default, validate=validators.Range(1, maximum),
                          metadata={"description": f"page size, 1-{maximum}"})


def _offset() -> fields.Integer:
    return fields.Integer(load_default=0, validate=validators.Range(0, 10**9),
                          metadata={"description": "items to skip"})


# -- requests -------------------------------------------------------------------------------

class _Body(Schema):
    class Meta:
        unknown = RAISE


class Update(_Body):
    """A change: at least one field (an empty change is a 400, and documented so)."""

    @validates_schema
    def _not_empty(self, data: dict[str, t.Any], **kwargs: t.Any) -> None:
        if not data:
            raise SchemaError(f"Nothing to update: send one of {', '.join(sorted(self.fields))}")


class _Query(Schema):
    class Meta:
        unknown = EXCLUDE


class PageQuery(_Query):
    limit = _limit()
    offset = _offset()


def _filter_id(description: str) -> fields.String:
    # An empty filter (`?album_id=`, as forms send it) filters nothing.
    return fields.String(validate=validators.Regexp(r"^([0-9a-fA-F]{24})?$",
                                                    error="Must be a 24-hex id or empty."),
                         metadata={"description": description})


class ImageListQuery(PageQuery):
    album_id = _filter_id("only images in this album")
    section_id = _filter_id("only images in this section")
    person_id = fields.List(_filter_id("only images showing this person"), metadata={
        "description": "only images showing this person; repeated: all of them"})
    only = fields.Boolean(load_default=False, metadata={
        "description": "with `person_id`: no other person in the image; alone: images "
                       "showing nobody"})
    exclude_person_id = fields.List(_filter_id("no image showing this person"), metadata={
        "description": "no image showing this person; repeatable"})
    date_from = QueryDate(metadata={"description": "taken (or uploaded) on or after"})
    date_to = QueryDate(end_of_day=True, metadata={
        "description": "taken (or uploaded) on or before; a bare date includes that day"})


class ThumbnailQuery(_Query):
    size = fields.Integer(validate=validators.Range(16, 1024),
                          metadata={"description": "longest side in pixels (default "
                                                   "THUMBNAIL_SIZE)"})


class FileQuery(_Query):
    size = fields.Integer(validate=validators.Range(16, 8192),
                          metadata={"description": "a JPEG fitted into this many pixels "
                                                   "instead of the stored original"})


def _form_id(description: str) -> fields.String:
    # A form field left empty arrives as "" (or "null"): no album or section.
    return fields.String(validate=validators.Regexp(r"^([0-9a-fA-F]{24}|null|none|)$",
                                                    error="Must be a 24-hex id or empty."),
                         metadata={"description": description + " (empty: none)"})


class UploadForm(_Query):
    file = fields.File(required=True, metadata={"description": "the photo (PNG, JPEG, GIF, "
                                                               "WEBP); exactly one"})
    album_id = _form_id("file it in this album")
    section_id = _form_id("file it in this section")


class UploadManyForm(_Query):
    files = fields.List(fields.File(), metadata={
        "description": "the photos; `files[]` and `file` are accepted too"})
    album_id = _form_id("file them in this album")
    section_id = _form_id("file them in this section")


class AsyncQuery(_Query):
    # "async" is a Python keyword, hence the data_key.
    run_async = fields.Boolean(load_default=False, data_key="async", metadata={
        "description": "answer 202 at once with a job that does the work"})


class _SearchParameters(Schema):
    tolerance = fields.Float(validate=validators.Range(0.0, 1.0), metadata={
        "description": "largest face distance that counts as a match (default "
                       "FACE_RECOGNITION_TOLERANCE)"})
    limit = fields.Integer(validate=validators.Range(1, 100),
                           metadata={"description": "matches to return, 1-100 (default 10)"})
    group_by = fields.String(validate=validators.OneOf(["person", "face"]), metadata={
        "description": "`person`: the best face per person; `face`: every matching face"})


class SearchQuery(_SearchParameters, _Query):
    pass


class SearchForm(_SearchParameters, _Query):
    file = fields.File(required=True, metadata={"description": "a photo with a face"})


class ImageUpdate(Update):
    album_id = _id("null takes it out", allow_none=True)
    section_id = _id("null takes it out", allow_none=True)
    filename = _name(255)


class PersonListQuery(PageQuery):
    sort = fields.String(load_default="face_count",
                         validate=validators.OneOf(["face_count", "name", "created_at"]))
    order = fields.String(validate=validators.OneOf(["asc", "desc"]),
                          metadata={"description": "default desc, asc for name"})
    q = _text(200, load_default="", metadata={"description": "name prefix, case-insensitive"})
    include_hidden = fields.Boolean(load_default=False,
                                    metadata={"description": "list hidden persons too"})
    favorite = fields.Boolean(load_default=False, metadata={"description": "favorites only"})


class RenameBody(_Body):
    name = _name(100, required=True)


class PersonUpdate(Update):
    """Any of a person's own fields; the others stay as they are."""

    name = _name(100)
    hidden = Flag(metadata={"description": "left out of `GET /persons/` unless "
                                           "`include_hidden=true`"})
    favorite = Flag()
    birth_date = fields.Date(allow_none=True, metadata={
        "description": "ISO date, not in the future; null clears it"})
    cover_face_id = _id("one of this person's faces, shown as its thumbnail while it is "
                        "the person's; null: the best face again", allow_none=True)


class MergeBody(_Body):
    source_person_ids = fields.List(_id(), required=True,
                                    validate=validators.Length(min=1, max=1000))
    force = Flag(load_default=False, metadata={
        "description": "merge persons marked as different people (409 otherwise)"})


class MoveBody(_Body):
    target_person_id = _id(required=True)


class MoveToNewBody(_Body):
    new_person_name = _name(100, allow_none=True)


class RejectBody(_Body):
    """Corrections that stick: "not this person"."""

    person_id = _id("the person the face is not (default: its person now)")


class RejectQuery(_Query):
    person_id = _id("forget only this rejection (default: every rejection of the face)")


class NotSameBody(_Body):
    other_person_id = _id("a person who is somebody else", required=True)


def _pixel(description: str) -> fields.Integer:
    return fields.Integer(required=True, validate=validators.Range(0, 10**6),
                          metadata={"description": description})


class FaceDraw(_Body):
    """A face the detector missed: its box in the stored image's pixels (``face_location``'s
    grid), inside the image, each side at least 8 pixels."""

    top = _pixel("first row of the box")
    right = _pixel("column just past the box")
    bottom = _pixel("row just past the box")
    left = _pixel("first column of the box")
    person_id = _id("the face's person (default: the nearest within tolerance, or a new one)",
                    allow_none=True)


class AlbumCreate(_Body):
    name = _name(200, required=True)
    description = _text(2000, multiline=True, allow_none=True)


class AlbumUpdate(Update):
    name = _name(200)
    description = _text(2000, multiline=True, allow_none=True)


class SectionListQuery(_Query):
    album_id = _filter_id("only this album's sections")


class SectionCreate(AlbumCreate):
    album_id = _id("the album it belongs to", allow_none=True)


class SectionUpdate(AlbumUpdate):
    album_id = _id("null detaches it", allow_none=True)


def _threshold(**kwargs: t.Any) -> fields.Float:
    return fields.Float(validate=validators.Range(0.01, 1.0), **kwargs)


class ReclusterQuery(_Query):
    """GET takes no ``async``: a job is started with POST (the view refuses it with a 400)."""

    tolerance = _threshold(metadata={
        "description": "the re-clustering threshold (DBSCAN eps; default DBSCAN_EPS)"})
    eps = _threshold(metadata={"description": "old name of `tolerance`", "deprecated": True})
    min_samples = fields.Integer(validate=validators.Range(1, 1000))
    preserve_manual = fields.Boolean(metadata={
        "description": "keep faces moved by hand where they are (default true)"})
    dry_run = fields.Boolean(metadata={
        "description": "compute the new grouping and answer its diff; write nothing"})
    moves_limit = fields.Integer(validate=validators.Range(1, MAX_MOVES_LIMIT), metadata={
        "description": f"dry run: moved faces per page, 1-{MAX_MOVES_LIMIT} (default 100)"})
    moves_offset = fields.Integer(validate=validators.Range(0, 10**9), metadata={
        "description": "dry run: moved faces to skip (default 0)"})


class ReclusterPostQuery(ReclusterQuery):
    run_async = fields.Boolean(data_key="async", metadata={
        "description": "answer 202 at once with a re-clustering job"})


class ReclusterBody(_Body):
    tolerance = _threshold()
    eps = _threshold(metadata={"deprecated": True})
    min_samples = fields.Integer(validate=validators.Range(1, 1000))
    preserve_manual = Flag()
    run_async = Flag(data_key="async")
    dry_run = Flag()
    moves_limit = WholeNumber(validate=validators.Range(1, MAX_MOVES_LIMIT))
    moves_offset = WholeNumber(validate=validators.Range(0, 10**9))


class JobListQuery(PageQuery):
    status = fields.String(validate=validators.OneOf(JOB_STATUSES))


class ResetQuery(_Query):
    confirm = fields.Boolean(required=True, truthy={"true", "1"}, falsy={"false", "0"},
                             validate=validators.Equal(True, error=RESET_WARNING),
                             error_messages={"required": RESET_WARNING},
                             metadata={"description": "must be true"})


# -- responses ------------------------------------------------------------------------------

class _Out(Schema):
    class Meta:
        unknown = INCLUDE


def _nullable_str(**kwargs: t.Any) -> fields.String:
    return fields.String(allow_none=True, **kwargs)


class Box(_Out):
    top = fields.Integer(required=True)
    right = fields.Integer(required=True)
    bottom = fields.Integer(required=True)
    left = fields.Integer(required=True)


class FaceSummary(_Out):
    face_id = fields.String(required=True)
    face_location = fields.Nested(Box, required=True)
    person_id = fields.String(required=True)
    is_manual_assignment = fields.Boolean()
    person_name = fields.String()
    quality_score = fields.Float(allow_none=True)
    face_url = fields.String()


class Image(_Out):
    _id = fields.String(required=True)
    filename = fields.String(required=True)
    mime_type = fields.String()
    width = fields.Integer()
    height = fields.Integer()
    size_bytes = fields.Integer()
    face_count = fields.Integer()
    album_id = _nullable_str()
    section_id = _nullable_str()
    taken_at = _nullable_str()
    created_at = fields.String()
    updated_at = fields.String()
    file_url = fields.String()
    thumbnail_url = fields.String()
    faces = fields.List(fields.Nested(FaceSummary))


class ImageDetail(Image):
    persons = fields.List(fields.Dict())
    album = fields.Dict(allow_none=True)
    section = fields.Dict(allow_none=True)
    exif = fields.Dict()
    sha256 = fields.String()
    suppressed_boxes = fields.List(fields.Nested(Box), metadata={
        "description": "boxes of faces deleted as false: not detected again"})


class ImagePage(_Out):
    images = fields.List(fields.Nested(Image), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer()
    offset = fields.Integer()


class UploadedFace(_Out):
    face_id = fields.String(required=True)
    face_location = fields.Nested(Box, required=True)
    person_id = fields.String(required=True)
    person_name = fields.String()
    new_person = fields.Boolean()
    quality_score = fields.Float(allow_none=True)


class UploadResult(_Out):
    image_id = fields.String(required=True)
    filename = fields.String()
    duplicate = fields.Boolean(required=True)
    faces_detected = fields.Integer()
    persons_created = fields.Integer()
    faces = fields.List(fields.Nested(UploadedFace))
    width = fields.Integer()
    height = fields.Integer()
    album_id = _nullable_str()
    section_id = _nullable_str()
    processing_time = fields.Float()


class FileResult(_Out):
    filename = fields.String(allow_none=True)
    success = fields.Boolean(required=True)
    error = fields.String()
    error_type = fields.String()
    code = fields.Integer()


class BatchResult(_Out):
    total_images = fields.Integer(required=True)
    successful_uploads = fields.Integer(required=True)
    failed_uploads = fields.Integer(required=True)
    duplicates = fields.Integer(required=True)
    total_faces_detected = fields.Integer()
    persons_created = fields.Integer()
    processing_time = fields.Float()
    results = fields.List(fields.Nested(FileResult), required=True)


class Match(_Out):
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    face_id = fields.String(required=True)
    image_id = fields.String()
    distance = fields.Float(required=True, metadata={
        "description": "distance from the query face to this face"})
    threshold = fields.Float(required=True, metadata={
        "description": "the largest distance that counts as a match (the tolerance used)"})
    confidence = fields.Float(required=True)
    query_face_index = fields.Integer()
    query_face_location = fields.Nested(Box)


class QueryFace(_Out):
    query_face_index = fields.Integer()
    face_location = fields.Nested(Box)


class SearchResult(_Out):
    matches = fields.List(fields.Nested(Match), required=True)
    total_matches = fields.Integer(required=True)
    faces_in_query = fields.Integer()
    query_faces = fields.List(fields.Nested(QueryFace))
    faces_searched = fields.Integer()
    tolerance = fields.Float()
    group_by = fields.String()
    search_time = fields.Float()
    processing_time = fields.Float()


class ImageDeleted(_Out):
    deleted_image_id = fields.String(required=True)
    faces_deleted = fields.Integer()
    persons_deleted = fields.List(fields.String())


class Person(_Out):
    _id = fields.String(required=True)
    name = fields.String(required=True)
    face_count = fields.Integer(required=True)
    image_count = fields.Integer()
    manual_face_count = fields.Integer()
    named_by_user = fields.Boolean()
    thumbnail_url = _nullable_str()
    thumbnail_face_id = _nullable_str()
    hidden = fields.Boolean()
    favorite = fields.Boolean()
    birth_date = fields.Date(allow_none=True)
    cover_face_id = _nullable_str(metadata={"description": "the face chosen as thumbnail"})
    created_at = fields.String()
    updated_at = fields.String()


class PersonPage(_Out):
    persons = fields.List(fields.Nested(Person), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer()
    offset = fields.Integer()
    sort = fields.String()
    order = fields.String()


class Face(_Out):
    face_id = fields.String(required=True)
    image_id = fields.String(required=True)
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    face_location = fields.Nested(Box, required=True)
    quality_score = fields.Float(allow_none=True)
    is_manual_assignment = fields.Boolean()
    assigned_by = fields.String(validate=validators.OneOf(["auto", "manual"]))
    assigned_via = fields.String(validate=validators.OneOf(ASSIGNED_VIA), metadata={
        "description": "how the face came to its person (faces stored before this field "
                       "read as upload when auto, move when manual)"})
    assigned_run = fields.Integer(metadata={
        "description": "the re-clustering run, when assigned_via is recluster or rollback"})
    face_url = fields.String()
    created_at = fields.String()


class DrawnFace(Face):
    new_person = fields.Boolean(metadata={"description": "true: it matched nobody and made a "
                                                         "new person"})
    distance = fields.Float(allow_none=True, metadata={
        "description": "mean distance to the person chosen by the rule; null when named"})


class FaceDeleted(_Out):
    deleted_face_id = fields.String(required=True)
    image_id = fields.String(required=True)
    person_id = fields.String(required=True)
    person_deleted = fields.Boolean(metadata={"description": "the face was its last"})
    image_face_count = fields.Integer()
    suppressed_box = fields.Nested(Box, metadata={
        "description": "kept on the image: a detection there is not stored again"})


class Confirmed(Face):
    was_manual = fields.Boolean(metadata={"description": "true: it was manual already, "
                                                         "nothing changed"})


class PersonDetail(Person):
    faces = fields.List(fields.Nested(Face))
    not_same = fields.List(fields.String(), metadata={
        "description": "persons marked as different people"})
    images = fields.List(fields.Dict())
    faces_total = fields.Integer()
    images_total = fields.Integer()


class Renamed(_Out):
    person_id = fields.String(required=True)
    old_name = fields.String()
    new_name = fields.String(required=True)


class Merged(_Out):
    person_id = fields.String(required=True)
    name = fields.String()
    faces_moved = fields.Integer()
    persons_deleted = fields.List(fields.String())
    face_count = fields.Integer()


class Moved(_Out):
    face_id = fields.String(required=True)
    from_person_id = fields.String()
    to_person_id = fields.String()
    is_manual_assignment = fields.Boolean()
    source_person_deleted = fields.Boolean()


class MovedToNew(_Out):
    face_id = fields.String(required=True)
    old_person_id = fields.String()
    new_person_id = fields.String(required=True)
    new_person_name = fields.String()
    is_manual_assignment = fields.Boolean()
    source_person_deleted = fields.Boolean()


class Rejected(_Out):
    face_id = fields.String(required=True)
    rejected_person_id = fields.String(required=True)
    new_person_id = fields.String(required=True)
    new_person_name = fields.String()
    source_person_deleted = fields.Boolean()
    rejected_from = fields.List(fields.String())


class RejectionsForgotten(_Out):
    face_id = fields.String(required=True)
    forgotten = fields.List(fields.String(), required=True)
    rejected_from = fields.List(fields.String())


class NotSame(_Out):
    person_id = fields.String(required=True)
    other_person_id = fields.String(required=True)
    not_same = fields.List(fields.String(), required=True)


class Section(_Out):
    _id = fields.String(required=True)
    name = fields.String(required=True)
    description = _nullable_str()
    album_id = _nullable_str()
    image_count = fields.Integer()
    created_at = fields.String()
    updated_at = fields.String()


class Album(_Out):
    _id = fields.String(required=True)
    name = fields.String(required=True)
    description = _nullable_str()
    image_count = fields.Integer()
    section_count = fields.Integer()
    created_at = fields.String()
    updated_at = fields.String()


class AlbumDetail(Album):
    sections = fields.List(fields.Nested(Section))


class AlbumList(_Out):
    albums = fields.List(fields.Nested(Album), required=True)
    total = fields.Integer(required=True)


class SectionList(_Out):
    sections = fields.List(fields.Nested(Section), required=True)
    total = fields.Integer(required=True)


class AlbumDeleted(_Out):
    deleted_album_id = fields.String(required=True)
    images_unassigned = fields.Integer()
    sections_detached = fields.Integer()


class SectionDeleted(_Out):
    deleted_section_id = fields.String(required=True)
    images_unassigned = fields.Integer()


class Reclustered(_Out):
    faces_processed = fields.Integer(required=True)
    persons_created = fields.Integer()
    persons_merged = fields.Integer()
    persons_deleted = fields.Integer()
    faces_moved = fields.Integer()
    manual_assignments_preserved = fields.Integer()
    persons_total = fields.Integer()
    tolerance = fields.Float(required=True)
    min_samples = fields.Integer()
    processing_time = fields.Float()
    run_number = fields.Integer(metadata={
        "description": "the run recorded (GET /cluster/runs/{number}); not in a dry run"})
    churn = fields.Float(metadata={"description": "share of faces whose person changed, 0-1"})
    dry_run = fields.Boolean(metadata={"description": "true: nothing was written"})
    diff = fields.Nested(lambda: RunDiff(), metadata={"description": "dry run: what would change"})
    moves = fields.List(fields.Nested(lambda: RunMove()), metadata={
        "description": "dry run: one page of the faces that would move"})
    moves_total = fields.Integer()
    moves_limit = fields.Integer()
    moves_offset = fields.Integer()


class Job(_Out):
    job_id = fields.String(required=True)
    kind = fields.String(validate=validators.OneOf(["upload", "recluster"]))
    status = fields.String(required=True, validate=validators.OneOf(JOB_STATUSES))
    total = fields.Integer()
    processed = fields.Integer()
    percent = fields.Float()
    eta_seconds = fields.Float(allow_none=True)
    status_url = fields.String()


class JobPage(_Out):
    jobs = fields.List(fields.Nested(Job), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer()
    offset = fields.Integer()


class About(_Out):
    name = fields.String(required=True)
    version = fields.String(required=True)
    description = fields.String()
    docs = fields.String()
    openapi = fields.String()
    endpoints = fields.Dict()


class Health(_Out):
    status = fields.String(required=True)
    database = fields.Dict()
    version = fields.String()


class Stats(_Out):
    total_persons = fields.Integer(required=True)
    total_images = fields.Integer(required=True)
    total_faces = fields.Integer(required=True)
    total_albums = fields.Integer()
    total_sections = fields.Integer()
    images_with_faces = fields.Integer()
    images_without_faces = fields.Integer()
    manual_face_assignments = fields.Integer()
    gallery_stats = fields.Dict()


class ResetDone(_Out):
    documents_deleted = fields.Dict(keys=fields.String(), values=fields.Integer())


# -- envelopes ------------------------------------------------------------------------------

class Error(Schema):
    """The error envelope every 4xx and 5xx answer uses."""

    success = fields.Boolean(required=True, validate=validators.Equal(False))
    error = fields.String(required=True, metadata={"description": "what went wrong"})
    error_type = fields.String(required=True, metadata={
        "description": "the error class, e.g. ValidationError, DocumentNotFoundError"})
    code = fields.Integer(required=True, metadata={"description": "the HTTP status"})
    details = fields.Raw(metadata={"description": "context: the field, the id, the limits"})
    timestamp = fields.String(required=True)
    request_id = fields.String(required=True)


_envelopes: dict[str, type[Schema]] = {}


def envelope(data: type[Schema]) -> type[Schema]:
    """The success envelope ``{success, data, message, timestamp}`` around ``data``."""
    name = data.__name__ + "Envelope"
    if name not in _envelopes:
        _envelopes[name] = Schema.from_dict({
            "success": fields.Boolean(required=True, validate=validators.Equal(True)),
            "data": fields.Nested(data, required=True),
            "message": fields.String(required=True),
            "timestamp": fields.String(required=True),
        }, name=name)
    return _envelopes[name]


# -- merge suggestions and the review queue (issue 14) -----------------------------------------

def _distance(description: str, **kwargs: t.Any) -> fields.Float:
    return fields.Float(validate=validators.Range(0.0, 2.0),
                        metadata={"description": description}, **kwargs)


class SuggestionQuery(_Query):
    limit = fields.Integer(load_default=10, validate=validators.Range(1, 100),
                           metadata={"description": "persons to return, 1-100"})
    max_distance = _distance("largest average-linkage distance proposed (default: none)")


class SuggestionPairsQuery(_Query):
    limit = _limit()
    max_distance = _distance("largest average-linkage distance proposed (default 0.7)",
                             load_default=0.7)


class Suggestion(_Out):
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    face_count = fields.Integer()
    distance = fields.Float(required=True, metadata={
        "description": "mean distance between the two persons' faces (average linkage)"})
    confidence = fields.Float(required=True)


class Suggestions(_Out):
    person_id = fields.String(required=True)
    person_name = fields.String()
    suggestions = fields.List(fields.Nested(Suggestion), required=True)
    limit = fields.Integer()
    max_distance = fields.Float(allow_none=True)
    persons_compared = fields.Integer()
    processing_time = fields.Float()


class SuggestedPair(Suggestion):
    other_person_id = fields.String(required=True)
    other_person_name = fields.String(allow_none=True)
    other_face_count = fields.Integer()


class SuggestedPairs(_Out):
    pairs = fields.List(fields.Nested(SuggestedPair), required=True)
    limit = fields.Integer()
    max_distance = fields.Float()
    persons_compared = fields.Integer()
    processing_time = fields.Float()


REVIEW_REASONS = ("far_from_person", "alone", "low_quality")


class ReviewFace(_Out):
    face_id = fields.String(required=True)
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    image_id = fields.String()
    face_url = fields.String()
    distance = fields.Float(allow_none=True, required=True, metadata={
        "description": "mean distance to the person's other faces (null: alone)"})
    quality_score = fields.Float(allow_none=True)
    person_face_count = fields.Integer()
    reason = fields.String(required=True, validate=validators.OneOf(REVIEW_REASONS))
    reasons = fields.List(fields.String(validate=validators.OneOf(REVIEW_REASONS)))
    score = fields.Float()


class ReviewPage(_Out):
    faces = fields.List(fields.Nested(ReviewFace), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer()
    offset = fields.Integer()
    tolerance = fields.Float()
    low_quality = fields.Float()


# -- quality figures and explained matches (issue 16) -------------------------------------

class QualityQuery(_Query):
    limit = fields.Integer(load_default=5, validate=validators.Range(1, 100), metadata={
        "description": "duplicate pairs, worst persons and conflicts listed, 1-100"})
    max_age = fields.Float(load_default=0.0, validate=validators.Range(0.0, 86400.0),
                           metadata={"description": "seconds: figures computed this recently "
                                                    "are answered even if the gallery "
                                                    "changed since (default 0: always "
                                                    "current)"})


class QualityPair(_Out):
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    other_person_id = fields.String(required=True)
    other_person_name = fields.String(allow_none=True)
    distance = fields.Float(required=True, metadata={
        "description": "mean distance between the two persons' faces (average linkage)"})


class QualityDuplicates(_Out):
    count = fields.Integer(required=True, metadata={
        "description": "pairs of persons within `threshold` that share no photo and are "
                       "not marked different people"})
    threshold = fields.Float(metadata={"description": "DBSCAN_EPS: what re-clustering joins"})
    pairs = fields.List(fields.Nested(QualityPair), required=True)


class SpreadPerson(_Out):
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    face_count = fields.Integer()
    spread = fields.Float(required=True, metadata={
        "description": "mean distance between the person's faces"})


class QualitySpread(_Out):
    mean = fields.Float(allow_none=True, metadata={"description": "over persons of 2+ faces"})
    median = fields.Float(allow_none=True)
    persons_measured = fields.Integer()
    persons_over_threshold = fields.Integer()
    threshold = fields.Float(metadata={"description": "FACE_RECOGNITION_TOLERANCE"})
    worst = fields.List(fields.Nested(SpreadPerson), required=True)


class Conflict(_Out):
    person_id = fields.String(required=True)
    image_id = fields.String(required=True)
    face_ids = fields.List(fields.String())


class LastRun(_Out):
    number = fields.Integer(allow_none=True)
    churn = fields.Float(allow_none=True, metadata={
        "description": "share of faces whose person the run changed"})


class Quality(_Out):
    faces_total = fields.Integer(required=True)
    persons_total = fields.Integer()
    faces_unassigned = fields.Integer(required=True, metadata={
        "description": "faces without a person"})
    persons_of_one_face = fields.Integer(required=True)
    same_photo_conflicts = fields.Integer(required=True, metadata={
        "description": "(person, photo) pairs with two or more faces: 0 unless broken"})
    same_photo_conflict_examples = fields.List(fields.Nested(Conflict))
    likely_duplicate_persons = fields.Nested(QualityDuplicates, required=True)
    spread = fields.Nested(QualitySpread, required=True)
    last_run = fields.Nested(LastRun, allow_none=True)
    churn_last_run = fields.Float(allow_none=True, metadata={
        "description": "the last re-clustering run's churn; null before any run"})
    manual_assignments = fields.Integer()
    manual_share = fields.Float(required=True, metadata={
        "description": "share of faces assigned or confirmed by hand"})
    limit = fields.Integer()
    cached = fields.Boolean(metadata={
        "description": "true: the embedding figures were kept from an earlier call"})
    up_to_date = fields.Boolean(metadata={
        "description": "false: kept under `max_age` although the gallery changed since"})
    computed_at = fields.String(metadata={"description": "when the embedding figures were "
                                                         "computed"})
    processing_time = fields.Float()


class NearFace(_Out):
    face_id = fields.String(required=True)
    image_id = fields.String()
    distance = fields.Float(required=True)


class Provenance(_Out):
    assigned_by = fields.String(validate=validators.OneOf(["auto", "manual"]))
    assigned_via = fields.String(validate=validators.OneOf(ASSIGNED_VIA))
    assigned_run = fields.Integer()
    assigned_at = fields.String(metadata={"description": "when the face was last assigned"})


class Choice(_Out):
    person_id = fields.String(allow_none=True, metadata={
        "description": "the person the rule would choose for this face today (null: a new "
                       "person)"})
    person_name = fields.String(allow_none=True)
    distance = fields.Float(allow_none=True)
    same_person = fields.Boolean()


BLOCK_REASONS = ("same_photo", "rejected", "not_same")


class RunnerUp(_Out):
    person_id = fields.String(required=True)
    person_name = fields.String(allow_none=True)
    distance = fields.Float(allow_none=True, metadata={"description": "average linkage"})
    within_threshold = fields.Boolean()
    blocked_by = fields.List(fields.String(validate=validators.OneOf(BLOCK_REASONS)))
    nearest_faces = fields.List(fields.Nested(NearFace))


class SamePhotoFace(_Out):
    face_id = fields.String(required=True)
    person_id = fields.String()


class BlockedPerson(_Out):
    person_id = fields.String(required=True)
    reasons = fields.List(fields.String(validate=validators.OneOf(BLOCK_REASONS)))


class Constraints(_Out):
    same_photo = fields.List(fields.Nested(SamePhotoFace), metadata={
        "description": "the photo's other faces: their persons are closed to this face"})
    rejected_from = fields.List(fields.String(), metadata={
        "description": "persons this face was rejected from"})
    not_same = fields.List(fields.String(), metadata={
        "description": "persons marked different people from this face's person"})
    blocked_persons = fields.List(fields.Nested(BlockedPerson))


class Explanation(_Out):
    face_id = fields.String(required=True)
    image_id = fields.String()
    person_id = fields.String(allow_none=True)
    person_name = fields.String(allow_none=True)
    status = fields.String(required=True, validate=validators.OneOf(
        ["assigned", "alone", "unassigned"]), metadata={
        "description": "alone: the only face of its person (it matched nobody)"})
    reason = fields.String(metadata={"description": "one sentence: why it is where it is"})
    provenance = fields.Nested(Provenance, required=True)
    linkage = fields.String(metadata={"description": "average: the mean distance to the "
                                                     "person's faces"})
    threshold = fields.Float(required=True, metadata={
        "description": "FACE_RECOGNITION_TOLERANCE, the assignment threshold"})
    distance = fields.Float(allow_none=True, metadata={
        "description": "average linkage to its own person's other faces (null: alone)"})
    within_threshold = fields.Boolean(allow_none=True)
    assignment_today = fields.Nested(Choice, required=True)
    nearest_in_person = fields.List(fields.Nested(NearFace))
    runner_up = fields.Nested(RunnerUp, allow_none=True)
    constraints = fields.Nested(Constraints, required=True)


class ExplainQuery(_Query):
    limit = fields.Integer(load_default=5, validate=validators.Range(1, 50), metadata={
        "description": "nearest faces listed per person, 1-50"})
# -- export and import of the people data (issue 16: docs/export.md) ---------------------------
# The document is read tolerantly (unknown fields are kept, not refused): a newer export may
# carry more; the service checks it again (the CLI imports without these schemas).

class _Lenient(Schema):
    class Meta:
        unknown = INCLUDE


class WholeNumber(fields.Integer):
    """A JSON integer: a number without a fraction (2.0 is one, as JSON Schema says), never
    a string or a boolean."""

    def _deserialize(self, value: t.Any, attr: str | None, data: t.Any, **kwargs: t.Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int | float) or (
                isinstance(value, float) and not value.is_integer()):
            raise self.make_error("invalid", input=value)
        return super()._deserialize(int(value), attr, data, **kwargs)


SHA256_PATTERN = r"^[0-9a-fA-F]{64}$"


def _sha256(description: str, **kwargs: t.Any) -> fields.String:
    return fields.String(validate=validators.Regexp(SHA256_PATTERN,
                                                    error="Must be a sha256 (64 hex digits)."),
                         metadata={"description": description}, **kwargs)


class ExportBox(_Lenient):
    """A face's box in the stored photo's pixels (``images[].width``/``height``)."""

    top = WholeNumber(required=True, validate=validators.Range(0, 10**6))
    right = WholeNumber(required=True, validate=validators.Range(0, 10**6))
    bottom = WholeNumber(required=True, validate=validators.Range(0, 10**6))
    left = WholeNumber(required=True, validate=validators.Range(0, 10**6))


class ExportFaceRef(_Lenient):
    """A face, named by its photo's bytes and its box (face ids differ between galleries)."""

    image_sha256 = _sha256("the photo's sha256", required=True)
    box = fields.Nested(ExportBox, required=True)


class ExportPerson(_Lenient):
    id = _id("the person's id, kept across galleries", required=True)
    name = _name(100, required=True)
    named_by_user = Flag(metadata={"description": "the name was given by a user (default "
                                                  "true); only such names replace a name"})
    hidden = Flag()
    favorite = Flag()
    birth_date = fields.String(allow_none=True, metadata={"format": "date"})
    cover_face = fields.Nested(ExportFaceRef, allow_none=True)
    face_count = WholeNumber(metadata={"description": "for the record; not read"})


class ExportAlbum(_Lenient):
    id = _id("the album's id", required=True)
    name = _name(200, required=True)
    description = _text(2000, multiline=True)


class ExportSection(ExportAlbum):
    album_id = _id("its album", allow_none=True)


class ExportImage(_Lenient):
    """A photo and its filing."""

    sha256 = _sha256("the photo's sha256", required=True)
    filename = fields.String()
    width = WholeNumber(allow_none=True, validate=validators.Range(1, 10**6))
    height = WholeNumber(allow_none=True, validate=validators.Range(1, 10**6))
    album_id = _id("the album it is filed in", allow_none=True)
    section_id = _id("the section it is filed in", allow_none=True)


class ExportFace(ExportFaceRef):
    person_id = _id("the face's person", required=True)
    assigned_by = fields.String(metadata={"description": "auto or manual (not read)"})
    assigned_via = fields.String(metadata={"description": "upload, recluster, rollback, "
                                                          "move, merge, confirm, drawn or "
                                                          "import (not read)"})
    assigned_run = WholeNumber(metadata={"description": "the re-cluster run (not read)"})
    quality_score = fields.Float(allow_none=True)
    embedding = fields.String(metadata={"description": "128 little-endian float32, base64 "
                                                       "(optional; not read)"})


class ExportRejection(_Lenient):
    face = fields.Nested(ExportFaceRef, required=True)
    person_id = _id("the person the face is not", required=True)


class ExportNotSame(_Lenient):
    person_id = _id("a person", required=True)
    other_person_id = _id("a different person", required=True)


class ExportDocument(_Lenient):
    """The people data of a gallery (``GET /export``; ``POST /import`` reads it back)."""

    format = fields.String(required=True, validate=validators.Equal("face-gallery-export"))
    version = WholeNumber(required=True, validate=validators.Equal(1))
    exported_at = fields.String()
    persons = fields.List(fields.Nested(ExportPerson))
    albums = fields.List(fields.Nested(ExportAlbum))
    sections = fields.List(fields.Nested(ExportSection))
    images = fields.List(fields.Nested(ExportImage))
    faces = fields.List(fields.Nested(ExportFace))
    rejections = fields.List(fields.Nested(ExportRejection))
    not_same = fields.List(fields.Nested(ExportNotSame))


class ImportReport(_Out):
    """What an import matched, created and left (counts; the first 100 misses listed)."""

    persons = fields.Dict(required=True)
    images = fields.Dict(required=True)
    faces = fields.Dict(required=True)
    corrections = fields.Dict(required=True)
    albums = fields.Dict(required=True)
    sections = fields.Dict(required=True)
    pending_imports = fields.Dict(required=True)
# -- re-clustering runs and their rollback (issue 16) ----------------------------------------

class RunListQuery(PageQuery):
    pass


class RunQuery(_Query):
    moves_limit = fields.Integer(load_default=100, validate=validators.Range(1, MAX_MOVES_LIMIT),
                                 metadata={"description": f"moved faces per page, "
                                                          f"1-{MAX_MOVES_LIMIT}"})
    moves_offset = _offset()


class RollbackQuery(_Query):
    force = fields.Boolean(load_default=False, metadata={
        "description": "leave faces changed since the run where they are and restore the "
                       "rest (default: 409 naming them)"})


class RunMove(_Out):
    face_id = fields.String(required=True)
    from_person_id = fields.String(required=True)
    to_person_id = fields.String(required=True, metadata={
        "description": "in a dry run, `new:N` for a person the run would create"})


class RunPerson(_Out):
    person_id = fields.String(required=True)
    name = fields.String(allow_none=True)


class SplitPerson(RunPerson):
    into = fields.List(fields.String(), required=True)


class MergedPerson(RunPerson):
    from_person_ids = fields.List(fields.String(), required=True)


class CreatedPerson(_Out):
    person_id = fields.String(required=True)
    face_count = fields.Integer()


class AffectedPerson(RunPerson):
    faces_lost = fields.Integer()
    faces_gained = fields.Integer()
    deleted = fields.Boolean()


class RunDiff(_Out):
    persons_created = fields.List(fields.Nested(CreatedPerson))
    persons_merged = fields.List(fields.Nested(MergedPerson))
    persons_split = fields.List(fields.Nested(SplitPerson))
    persons_deleted = fields.List(fields.Nested(RunPerson))
    named_persons_affected = fields.List(fields.Nested(AffectedPerson))
    counts = fields.Dict(keys=fields.String(), values=fields.Integer(), metadata={
        "description": "the lists' full lengths (each list stops at 1000) and faces_moved"})


class Run(_Out):
    number = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validators.OneOf(["recluster", "rollback"]))
    status = fields.String(required=True, validate=validators.OneOf(
        ["running", "done", "interrupted"]))
    params = fields.Dict()
    by = fields.String(metadata={"description": "`key:<fingerprint>`, `anonymous`, `cli`"})
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    summary = fields.Dict(metadata={"description": "the run's result, `churn` and `diff`"})
    rolled_back_by = fields.Integer(allow_none=True)
    rollback_of = fields.Integer(allow_none=True)


class RunPage(_Out):
    runs = fields.List(fields.Nested(Run), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer()
    offset = fields.Integer()


class RunDetail(Run):
    moves = fields.List(fields.Nested(RunMove), required=True)
    moves_total = fields.Integer(required=True)
    moves_limit = fields.Integer()
    moves_offset = fields.Integer()


class RolledBack(_Out):
    run_number = fields.Integer(required=True, metadata={"description": "the rollback's run"})
    rolled_back_run = fields.Integer(required=True)
    faces_restored = fields.Integer(required=True)
    faces_skipped = fields.Integer(metadata={"description": "changed since; left (force)"})
    skipped = fields.List(fields.Dict(), metadata={
        "description": "`{face_id, reason, person_id}` of the first 50 faces left"})
    persons_recreated = fields.Integer()
    persons_deleted = fields.Integer()
    churn = fields.Float()
