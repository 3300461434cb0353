"""Times as the API and the logs write them: ISO 8601 in UTC with a Z suffix."""

import time
from datetime import UTC, datetime


def iso(epoch=None, timespec="seconds"):
    """Return an epoch time (now by default) as ISO 8601 UTC with a Z suffix."""
    moment = datetime.fromtimestamp(time.time() if epoch is None else epoch, UTC)
    return moment.isoformat(timespec=timespec).removesuffix("+00:00") + "Z"
