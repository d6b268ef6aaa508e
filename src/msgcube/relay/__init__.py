"""The relay: msgcube in front of an account's own server (its bot).

A push that passed the gate is stored *and* forwarded unchanged to the account's
upstream; WeChat gets the upstream's answer verbatim. ``forward.py`` holds the HTTP
side (``Relay``), ``recorder.py`` the timings it keeps for interface analysis,
``upstream.py`` the rules for upstream URLs. The committer does not know the relay
exists: the callback hands both the same push.
"""

from msgcube.relay.forward import Relay, RelayAnswer, RelayOutcome
from msgcube.relay.recorder import RelayRecorder
from msgcube.relay.upstream import check_upstream_url, shown_upstream, upstream_or_none

__all__ = [
    "Relay",
    "RelayAnswer",
    "RelayOutcome",
    "RelayRecorder",
    "check_upstream_url",
    "shown_upstream",
    "upstream_or_none",
]
