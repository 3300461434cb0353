"""What a generator declares about itself: the one record the rest of the server reads."""

from collections.abc import Callable
from dataclasses import dataclass

from image2model.models3d.convert import FORMATS


@dataclass(frozen=True)
class Generator:
    """A generator: its name, kind, options, estimate, needs and the code that runs it."""

    name: str  # the model_type clients send
    title: str
    description: str
    # Remote generators run FAL steps: counted against MAX_FAL_IN_FLIGHT, in the FAL slots.
    # Local ones are CPU work on this server, in the local slots.
    remote: bool
    estimated_seconds: int  # typical wall time of one generation, for clients' estimates
    parse_options: Callable  # request fields -> checked options; raises ApiError
    step: Callable  # advances one generation by one step, given its GenerationRun
    needs: str | None = None  # the setting it cannot run without
    check_images: Callable | None = None  # (sources, options): refuse unusable images at once
    cancel: Callable | None = None  # (app, generation row): give up a remote request
    init_app: Callable | None = None  # (app): set up what it needs once per app (clients)
    formats: tuple = tuple(FORMATS)

    def unavailable_reason(self, config):
        """Return why this generator cannot run with `config`, or None when it can."""
        if self.needs and not config.get(self.needs):
            return f"{self.needs} is not configured on this server"
        return None
