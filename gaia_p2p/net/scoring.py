"""Gossipsub peer scores: the parameters for gaia's topics, and reading the scores back.

What a score does (py-libp2p 0.8.1's ``PeerScorer`` plus the workarounds of ``libp2p_fixes`` "I."):
a peer's score is one number, summed over every topic. Gates, checked against it:

- ``score < ACCEPT_PX_THRESHOLD``: peer exchange from its PRUNEs is not followed;
- ``score < GOSSIP_THRESHOLD``: we stop forwarding messages to it;
- ``score < PUBLISH_THRESHOLD``: its messages are dropped *before validation* (py-libp2p checks
  this gate in ``Pubsub.push_msg``), and our own publishes skip it;
- ``score < GRAYLIST_THRESHOLD``: cut off. Every control message it sends (IHAVE, IWANT, GRAFT,
  PRUNE) is dropped, it is pruned from our mesh at the next heartbeat and never grafted. Its
  subscriptions are still recorded (py-libp2p reads them before any gate).

Gossipsub v1.1 prunes a peer from the mesh at any negative score. Not here: honest peers score 0
(no positive terms to absorb a stray rejection), and py-libp2p publishes to mesh peers only (no
flood publishing), so a peer pruned after its first invalid message could not reach us directly
for the hour its penalty takes to decay, and a peer would be cut off after one bad message instead
of ~10 (tests/integration/test_hostile_peer.py shows that: 10 kinds of malformed message, from one
attacker, each counted by reason).

Only one term is on: P4, messages our topic validators rejected (``ValidatedTopic.validator``
returning False), charged to the peer that forwarded them. Everything else is zero, so an honest peer
scores exactly 0 and is never penalized; rejections for reasons that are not the forwarder's fault
(``rate_limited``, ``internal_error``) are gossipsub IGNOREs (``libp2p_fixes.ignore_message``) and
cost nothing. Why each number:

- ``INVALID_MESSAGE_WEIGHT`` 10: one invalid message = -10, so thresholds read as message counts.
  py-libp2p's P4 is linear (go-libp2p squares the counter) and is subtracted: the weight is positive.
- ``INVALID_MESSAGE_CAP`` 100 messages: py-libp2p's default cap is 0, which turns P4 off
  (``min(count, cap)``). A peer can never get near 100: from the 10th its messages are not validated.
- ``GOSSIP_THRESHOLD`` -45: crossed by the 5th invalid message.
- ``PUBLISH_THRESHOLD`` = ``GRAYLIST_THRESHOLD`` = -95: crossed by the 10th invalid message sent
  within a few minutes (after the 9th the score is -90, or a little above by decay), so ~10 bad
  messages are validated and no more. The two are equal on purpose: py-libp2p drops messages below
  the publish threshold before validation, so P4 cannot grow past it; a graylist threshold below it
  could never be reached by invalid messages. 10 rather than fewer so that a peer whose software
  disagrees with ours on a rule leaves a few messages of evidence in the logs (``message_rejected``)
  before the cut.
- ``ACCEPT_PX_THRESHOLD`` 0: peer exchange only from peers that never sent an invalid message (no
  gaia node sends PX today: ``do_px`` is off).
- ``INVALID_HALF_LIFE_S`` 600 s, turned into a per-heartbeat decay (py-libp2p decays once per
  heartbeat, ``network.heartbeat_s``). Slow: a graylisted peer (-100) is back above -95 after ~45 s,
  so the steady state it can reach is one validated invalid message per ~90 s; a peer with one
  stray rejection is back at 0 (counter below ``libp2p_fixes.DECAY_TO_ZERO``) after ~66 min.
  Counters survive a disconnect (``libp2p_fixes`` I.), so reconnecting does not reset them;
  a fresh identity does (sybils: docs/RELIABILITY.md).
- P1 (time in mesh), P2 (first deliveries), P3 (mesh deliveries): weight 0. py-libp2p's mesh
  upkeep (opportunistic grafting, peer replacement, pruning above ``degree_high``) compares honest
  peers' scores with each other; with every honest peer at 0 it behaves exactly as before scoring
  was on (see docs/LIBP2P.md bug E for how fragile that is). py-libp2p's P3 is a reward that nothing
  feeds (``on_mesh_delivery`` is never called), not the spec's delivery-deficit penalty.
- P5 (behaviour penalties): weight 0. py-libp2p feeds them from its GRAFT-flood rule (which fires on
  honest peers after a prune, docs/LIBP2P.md bug E), its equivocation check (a restarted node reuses
  seqnos: they start at the wall-clock second), its IHAVE/IWANT rate limits and its spam protection
  (off, bug C).
- P6 (application-specific): off. A liar is banned and blacklisted by the island outright
  (``max_lies``), which is stronger than any score.
- P7 (IP colocation): weight 0. Every peer of a local swarm is 127.0.0.1; py-libp2p also adds a
  /24-subnet term from the same weight.
"""

from __future__ import annotations

import math
from typing import Any

INVALID_MESSAGE_WEIGHT = 10.0
INVALID_MESSAGE_CAP = 100.0
INVALID_HALF_LIFE_S = 600.0
GOSSIP_THRESHOLD = -45.0
PUBLISH_THRESHOLD = -95.0
GRAYLIST_THRESHOLD = -95.0
ACCEPT_PX_THRESHOLD = 0.0


def decay_per_heartbeat(heartbeat_s: float, half_life_s: float = INVALID_HALF_LIFE_S) -> float:
    """The factor a counter is multiplied by at each heartbeat so that it halves every ``half_life_s``."""
    return 0.5 ** (heartbeat_s / half_life_s)


def score_params(*, heartbeat_s: float) -> Any:
    """``ScoreParams`` for ``GossipSub(score_params=...)``; the same for every topic (py-libp2p's
    params are not per topic). Enforced only with ``libp2p_fixes.enforce_peer_scores``."""
    from libp2p.pubsub.score import ScoreParams, TopicScoreParams

    return ScoreParams(
        p1_time_in_mesh=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p2_first_message_deliveries=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p3_mesh_message_deliveries=TopicScoreParams(weight=0.0, cap=0.0, decay=1.0),
        p4_invalid_messages=TopicScoreParams(weight=INVALID_MESSAGE_WEIGHT, cap=INVALID_MESSAGE_CAP,
                                             decay=decay_per_heartbeat(heartbeat_s)),
        p5_behavior_penalty_weight=0.0,
        p6_appl_slack_weight=0.0,
        app_specific_score_fn=None,
        p7_ip_colocation_weight=0.0,
        p7_ip_colocation_threshold=1_000_000,
        publish_threshold=PUBLISH_THRESHOLD,
        gossip_threshold=GOSSIP_THRESHOLD,
        graylist_threshold=GRAYLIST_THRESHOLD,
        accept_px_threshold=ACCEPT_PX_THRESHOLD,
    )


def peer_scores(gossipsub: Any) -> dict[str, float]:
    """Peer id -> score, for every peer our gossipsub knows (connected) and every disconnected peer
    whose P4 counters are still remembered; lowest first. Ourselves excluded. Reads, never creates,
    scorer entries (with ``enforce_peer_scores`` installed)."""
    scorer = gossipsub.scorer
    me = gossipsub.pubsub.my_id if gossipsub.pubsub is not None else None
    peers = {*gossipsub.peer_protocol, *scorer.invalid_messages} - {me}
    scores = {str(p): scorer.score(p, []) for p in peers}
    return {p: round(s, 3) if math.isfinite(s) else s for p, s in sorted(scores.items(), key=lambda kv: kv[1])}
