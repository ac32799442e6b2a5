"""The errors the gallery raises, one tree, no Flask inside.

Services raise these; ``app.py`` turns every one of them into the documented error envelope
with ``code`` as the HTTP status and the class name as ``error_type``::

    GalleryError                     500  base: .message, .details
    ├── ValidationError              400  a malformed request or value
    │   ├── FileValidationError      400  an upload that is not a usable image
    │   └── FileSizeError            413  an upload over MAX_CONTENT_LENGTH
    ├── AuthenticationError          401  no API key, or one that is not configured
    ├── ForbiddenError               403  an action this deployment does not allow
    ├── DocumentNotFoundError        404  an id that names nothing
    ├── ConflictError                409  the request clashes with the current state
    ├── FaceDetectionError           422  a photo with no face where one is needed
    ├── RateLimitError               429  too many requests from one client
    ├── FaceRecognitionError         500  dlib failed on a valid image
    ├── ClusteringError              500  re-clustering failed
    └── DatabaseConnectionError      503  the database cannot be reached
"""

from __future__ import annotations

import typing as t

__all__ = [
    "AuthenticationError",
    "ClusteringError",
    "ConfigError",
    "ConflictError",
    "DatabaseConnectionError",
    "DocumentNotFoundError",
    "FaceDetectionError",
    "FaceRecognitionError",
    "FileSizeError",
    "FileValidationError",
    "ForbiddenError",
    "GalleryError",
    "RateLimitError",
    "ValidationError",
]


class GalleryError(Exception):
    """Base of every error a client may see; ``code`` is the HTTP status."""

    code = 500

    def __init__(self, message: str, *, details: t.Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[t.Any, ...]:
        # Errors cross process boundaries (the ingest pool): keep ``details``, which the
        # default pickling of an exception (its args only) would drop.
        return _rebuild, (type(self), self.message, self.details)


def _rebuild(cls: type[GalleryError], message: str, details: t.Any) -> GalleryError:
    return cls(message, details=details)


class ValidationError(GalleryError):
    code = 400


class FileValidationError(ValidationError):
    code = 400


class FileSizeError(ValidationError):
    code = 413


class AuthenticationError(GalleryError):
    code = 401


class ForbiddenError(GalleryError):
    code = 403


class DocumentNotFoundError(GalleryError):
    code = 404

    @classmethod
    def for_id(cls, kind: str, document_id: str) -> DocumentNotFoundError:
        """The standard message: ``Person not found with ID: ...``."""
        return cls(f"{kind} not found with ID: {document_id}", details={"id": document_id})


class ConflictError(GalleryError):
    code = 409


class FaceDetectionError(GalleryError):
    code = 422


class RateLimitError(GalleryError):
    code = 429


class FaceRecognitionError(GalleryError):
    code = 500


class ClusteringError(GalleryError):
    code = 500


class DatabaseConnectionError(GalleryError):
    code = 503


class ConfigError(Exception):
    """A configuration value is invalid; raised at start-up, never answered to a client."""
