"""sipd_mi: Python client for the sipd Management Interface over gRPC.

See sipd_mi.client for the API and `python3 -m sipd_mi --help` for the command line.
"""

from sipd_mi.client import Client, MiError, Node, Reply, StreamedReply
from sipd_mi.session import Session, SessionClosed, SessionRequestError

__all__ = [
    "Client",
    "MiError",
    "Node",
    "Reply",
    "Session",
    "SessionClosed",
    "SessionRequestError",
    "StreamedReply",
]
