"""The console's error pages: signed out, a refused form, a missing permission, an API's
error (a credential refused ends the session)."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.clients import ApiProblem, ApiUnavailable
from services.console.session import COOKIE_NAME, Session
from services.console.web import Console, CsrfRefused, PermissionMissing, SignedOut, render

log = logging.getLogger("services.console")


def install_error_pages(app: FastAPI, state: Console) -> None:
    """The exception handlers that answer each of the console's errors with a page."""

    def _session(request: Request) -> Session | None:
        return state.sessions.get(request.cookies.get(COOKIE_NAME))

    @app.exception_handler(SignedOut)
    async def signed_out(_: Request, exc: SignedOut) -> Response:
        query = "" if exc.next_path == "/" else "?" + urlencode({"next": exc.next_path})
        return RedirectResponse("/signin" + query, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(request: Request, _: CsrfRefused) -> HTMLResponse:
        context = {
            "title": "Request refused",
            "status": 403,
            "message": (
                "This form was out of date or came from another site, so nothing was changed. "
                "Go back, reload the page and try again."
            ),
        }
        return render(
            request, state, "error.html", context, session=_session(request), status_code=403
        )

    @app.exception_handler(PermissionMissing)
    async def permission_missing(request: Request, exc: PermissionMissing) -> HTMLResponse:
        session = _session(request)
        who = session.principal.label if session else "this sign-in"
        message = (
            f"Signed in as {who}, which does not hold the permission '{exc.permission}' that"
            " this needs."
        )
        if request.method != "GET":
            message += " Nothing was changed."
        context = {"title": "Permission needed", "status": 403, "message": message}
        return render(request, state, "error.html", context, session=session, status_code=403)

    @app.exception_handler(ApiProblem)
    async def api_problem(request: Request, exc: ApiProblem) -> Response:
        session = _session(request)
        if exc.status == 401 and session is not None:
            # The session's credential is refused now (an admin key revoked or rotated):
            # the session ends, and its user signs in again.
            log.warning("session ended: the %s refused its credential", exc.service)
            state.sessions.delete(request.cookies.get(COOKIE_NAME))
            response = RedirectResponse("/signin?expired=1", status_code=303)
            response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
            return response
        status = 503 if isinstance(exc, ApiUnavailable) else exc.status
        title = {403: "Permission needed", 404: "Not found"}.get(status, "Request failed")
        if status >= 500:
            title = "Service unavailable"
        context = {"title": title, "status": status, "message": exc.message}
        return render(request, state, "error.html", context, session=session, status_code=status)
