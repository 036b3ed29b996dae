"""The Locations mixin of Cloud Tasks (``google.cloud.location.Locations``): ListLocations
and GetLocation, which Google's clients offer beside the queue and task calls.

The server takes queues in any well-formed location, so every location exists here:
GetLocation answers any ``projects/P/locations/L``. ListLocations answers the locations of
the project that hold a queue, plus :data:`DEFAULT_LOCATION` (the region Google's samples
use), by id.
"""

from __future__ import annotations

import base64

from google.cloud.location.locations_pb2 import (  # type: ignore[import-untyped]
    GetLocationRequest,
    ListLocationsRequest,
    ListLocationsResponse,
    Location,
)

from proxy.cloudtasks_server import validation as v
from proxy.cloudtasks_server.runtime import Runtime
from proxy.cloudtasks_server.validation import invalid
from proxy.limits import PROJECT_ID_RE

DEFAULT_LOCATION = "us-central1"
REGION_LABEL = "cloud.googleapis.com/region"


def _location(project: str, location_id: str) -> Location:
    return Location(
        name=f"projects/{project}/locations/{location_id}",
        location_id=location_id,
        labels={REGION_LABEL: location_id},
    )


class LocationApi:
    """Location RPCs on ``runtime`` (protobuf messages of googleapis-common-protos)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def list_locations(self, request: ListLocationsRequest) -> ListLocationsResponse:
        """Locations of ``projects/P`` by id, ``page_size`` at a time (0: all); ``filter``
        is not supported (INVALID_ARGUMENT)."""
        parts = request.name.split("/")
        if len(parts) != 2 or parts[0] != "projects" or not PROJECT_ID_RE.match(parts[1]):
            raise invalid(f"Invalid resource field value in the request: name {request.name!r}.")
        if request.filter:
            raise invalid("ListLocations filter is not supported by this server.")
        project = parts[1]
        ids = {DEFAULT_LOCATION}
        for name in self.rt.queues:
            queue = v.parse_queue_name(name)
            if queue.project == project:
                ids.add(queue.location)
        after = ""
        if request.page_token:
            try:
                after = base64.urlsafe_b64decode(request.page_token.encode()).decode()
            except (ValueError, UnicodeDecodeError):
                raise invalid("page_token is not one this server returned.") from None
        remaining = sorted(i for i in ids if i > after)
        size = v.page_size(request.page_size, len(remaining) or 1)
        page = remaining[:size]
        token = ""
        if len(remaining) > size:
            token = base64.urlsafe_b64encode(page[-1].encode()).decode()
        return ListLocationsResponse(
            locations=[_location(project, i) for i in page], next_page_token=token
        )

    async def get_location(self, request: GetLocationRequest) -> Location:
        """The location ``projects/P/locations/L`` (any well-formed one)."""
        parts = v.parse_parent(request.name).split("/")
        return _location(parts[1], parts[3])
