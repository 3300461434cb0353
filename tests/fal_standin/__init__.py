"""A faithful FAL.AI stand-in (queue, storage, CDN files) for Tripo3D, over HTTPS on loopback.

    with FalStandIn(latency=0.3) as fal:
        env = {**os.environ, **fal.env()}  # FAL_KEY, FAL_QUEUE_RUN_HOST, SSL_CERT_FILE, ...
        # in the client process, before the first upload:
        #     fal_client.client.REST_URL = fal_client.client.CDN_URL = fal.base_url
        fal.fail_next("status", 503, body="<html>nginx</html>")
        fal.wait_for(lambda: fal.submit_count >= 1, timeout=10)

Modules: server (FalStandIn), handler (HTTP and routes), queue_api and storage_api (the
endpoints), jobs (the clock-driven lifecycle), tripo (the model's input and output), assets.
"""

from .faults import STAGES
from .server import RESULT_MODES, FalStandIn

__all__ = ["FalStandIn", "RESULT_MODES", "STAGES"]
