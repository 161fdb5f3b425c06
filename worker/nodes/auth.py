"""Auth node types (``auth.*``): passwords, tokens and scopes in workflows.

They call ``services.accounts``, the same code as ``POST /auth/login`` and
the API's bearer check.

Items are plain JSON that any node (``data.set``, say) can fabricate, and
tenants may register workflows of their own, so ``auth.issue_token`` must not
mint a token for whatever identity an item claims. ``auth.verify_password``
therefore adds a ``proof`` to the identity it emits: an HMAC over the job id
and the identity, keyed from the JWT secret. ``auth.issue_token`` issues only
for an identity whose proof matches the current job.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from packagerepo.accounts import Identity, jwt_secret
from packagerepo.errors import Forbidden, Unauthorized
from worker.nodes.base import NodeCall, Outputs, implements

PROOF_CONTEXT = b"packagerepo auth.verify_password proof"


def _proof(call: NodeCall, identity: Identity) -> str:
    key = hmac.new(
        jwt_secret(call.services.settings).encode(), PROOF_CONTEXT, hashlib.sha256
    ).digest()
    message = "\n".join(
        [
            call.execution.job_id,
            identity.username,
            identity.tenant,
            ",".join(identity.scopes),
        ]
    )
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


@implements("auth.verify_password")
def verify_password(call: NodeCall) -> Outputs:
    """The user's identity and a proof for this job, or ``UNAUTHORIZED``.

    Every check counts against ``LOGIN_RATE`` for its username, as a
    ``POST /auth/login`` does (``RATE_LIMITED`` past it): one budget per
    username for all workflows and callers, since a worker does not know
    the client's address.
    """
    username = call.param("username")
    settings = call.services.settings
    call.services.rate_limits.hit(
        settings.login_rate, "login", str(username)[:64], "workflow"
    )
    identity = call.services.accounts.authenticate(username, call.param("password"))
    item = {**identity.to_dict(), "proof": _proof(call, identity)}
    return Outputs.single([item])


def _proven_identity(call: NodeCall, claimed: Any) -> Identity:
    if not isinstance(claimed, dict):
        raise Unauthorized("No verified identity reached auth.issue_token.")
    scopes = claimed.get("scopes")
    identity = Identity(
        str(claimed.get("username", "")),
        str(claimed.get("tenant", "")),
        tuple(scopes) if isinstance(scopes, list) else (),
    )
    proof = claimed.get("proof")
    if not isinstance(proof, str) or not hmac.compare_digest(
        proof, _proof(call, identity)
    ):
        raise Unauthorized("The identity was not verified by this job.")
    return identity


@implements("auth.issue_token")
def issue_token(call: NodeCall) -> Outputs:
    """``{token, expires_in, user}`` for the identity verified in this job."""
    identity = _proven_identity(call, call.param("identity", call.first_item))
    token, expires_in = call.services.accounts.issue_token(identity)
    item = {"token": token, "expires_in": expires_in, "user": identity.to_dict()}
    return Outputs.single([item])


@implements("auth.verify_token")
def verify_token(call: NodeCall) -> Outputs:
    """The identity inside a valid token, or ``UNAUTHORIZED``."""
    identity = call.services.accounts.decode_token(call.param("token"))
    return Outputs.single([identity.to_dict()])


@implements("auth.require_scope")
def require_scope(call: NodeCall) -> Outputs:
    """Pass the input on when ``scopes`` hold ``scope``, else ``FORBIDDEN``."""
    scope = call.param("scope")
    scopes = call.param("scopes")
    if not isinstance(scopes, list):
        scopes = []
    if not Identity("", "", tuple(str(s) for s in scopes)).has_scope(scope):
        raise Forbidden(f"This step needs the {scope} scope.")
    return Outputs.single(call.items or [{}])
