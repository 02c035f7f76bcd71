"""A keyed submit's digest is the one the release before `metadata` stored for the same
request, so a retry that spans the upgrade replays its job instead of a 409 conflict.

The digests below were computed by that release's code (commit bc4dcb7) for these
requests; a new optional field that changes them breaks every such retry.
"""

from __future__ import annotations

import io

from starlette.datastructures import UploadFile

from api.routers.jobs import _json_request, _upload_request
from api.schemas import FitRequest
from shared.jobs.idempotency import fingerprint

BODY = {
    "task": "classification",
    "train": {"X": [[1.0, "a"], [2.0, "b"]], "y": ["x", "y"]},
    "callback_url": "https://example.com/hook",
}
BEFORE_METADATA_JSON = "110792cc7c5c255092c64d6391e60bd65d43fab0eaeda235cd2179ef179845ee"
BEFORE_METADATA_UPLOAD = "d10aabf8a4d966568f04932f6e2be84e853b3fe1c8127f9d5322380e18854c9c"


def _upload() -> UploadFile:
    return UploadFile(io.BytesIO(b"x,y\n1,a\n2,b\n"), filename="train.csv")


def test_a_json_submit_without_metadata_hashes_as_before():
    assert fingerprint(*_json_request("fit", FitRequest.model_validate(BODY))) == (
        BEFORE_METADATA_JSON
    )
    labelled = FitRequest.model_validate({**BODY, "metadata": {"order": "A-17"}})
    assert fingerprint(*_json_request("fit", labelled)) != BEFORE_METADATA_JSON


def test_an_upload_without_metadata_hashes_as_before():
    fields = {"task": "classification", "target": "y", "options": {}, "callback_url": None}
    request = _upload_request("fit", {**fields, "metadata": None}, {"file": _upload()})
    assert fingerprint(*request) == BEFORE_METADATA_UPLOAD
    labelled = _upload_request("fit", {**fields, "metadata": {"o": "1"}}, {"file": _upload()})
    assert fingerprint(*labelled) != BEFORE_METADATA_UPLOAD
