"""libp2p plumbing: the host and its py-libp2p workarounds, traffic accounting, peer scores, liveness, discovery."""
