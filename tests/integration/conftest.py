"""In-process multi-node fixtures: real libp2p hosts on 127.0.0.1, port 0, one trio.run."""

from __future__ import annotations

import pytest

from gaia_p2p import logs


@pytest.fixture(autouse=True)
def _quiet_logs():
    logs.configure("json", "warning")
    from gaia_p2p.net.host import quiet_libp2p_logging

    quiet_libp2p_logging("critical")


