"""Sign-in, sign-out and the language switch."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from console import i18n
from console.api import Pages, safe_next
from console.session import COOKIE, LANG_COOKIE, SignedOut, cookie_options, local_token, principal_of
from console.settings import ConsoleSettings
from regsosek.auth import Role
from regsosek.contracts.identifiers import is_ascii_digits
from regsosek.programmes import PROGRAMME_CODES, is_programme_code

HOME = {Role.ADMIN: "/operations", Role.SUPERVISOR: "/worklist", Role.OFFICER: "/operations",
        Role.VILLAGE_OFFICIAL: "/village", Role.PROGRAMME: "/integrator"}


def sign_in_problems(role: str, subject: str, areas: list[str], programme: str) -> dict[str, str]:
    """Each field's problem (message key), empty when the sign-in is well formed."""
    problems = {}
    if role not in Role._value2member_map_:
        problems["role"] = "signin.bad_role"
    if not subject.strip() or len(subject) > 64 or not subject.isprintable():
        problems["subject"] = "signin.bad_subject"
    if not areas or len(areas) > 20 or not all(is_ascii_digits(a, 2, 14) for a in areas):
        problems["area"] = "signin.bad_area"
    if role == Role.PROGRAMME.value and not is_programme_code(programme):
        problems["programme"] = "signin.bad_programme"
    return problems


def signin_router(settings: ConsoleSettings, pages: Pages, home_of: Callable[[Role], str] = HOME.__getitem__) -> APIRouter:
    r = APIRouter(default_response_class=HTMLResponse, include_in_schema=False)

    def form(request: Request, status: int = 200, problems: dict | None = None, values: dict | None = None) -> Response:
        return pages.render(request, "signin.html", status=status, roles=list(Role), programmes=PROGRAMME_CODES,
                            production=settings.production, next=safe_next(request.query_params.get("next")),
                            problems=problems or {}, values=values or {})

    @r.get("/")
    async def root(request: Request):
        try:
            principal, _ = await principal_of(request, settings)
        except SignedOut:
            return RedirectResponse("/signin", 303)
        return RedirectResponse(home_of(principal.role), 303)

    @r.get("/signin")
    async def signin_page(request: Request):
        return form(request, status=403 if settings.production else 200)

    @r.post("/signin")
    async def signin(request: Request, role: str = Form(..., max_length=32), subject: str = Form(..., max_length=200),
                     area: str = Form(..., max_length=400), programme: str = Form("", max_length=32),
                     next: str = Form("/", max_length=400)):
        if settings.production:
            return form(request, status=403)
        areas = area.replace(",", " ").split()
        problems = sign_in_problems(role, subject, areas, programme)
        if problems:
            return form(request, status=422, problems=problems,
                        values={"role": role, "subject": subject, "area": area, "programme": programme})
        token = local_token(settings, role=Role(role), subject=subject.strip(), areas=areas,
                            programmes=[programme] if programme else [])
        target = safe_next(next)
        response = RedirectResponse(home_of(Role(role)) if target == "/" else target, 303)
        response.set_cookie(COOKIE, token, **cookie_options(settings))
        return response

    @r.post("/signout")
    async def signout():
        response = RedirectResponse("/signin", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @r.get("/lang/{code}")
    async def switch_language(code: str, next: str = "/"):
        response = RedirectResponse(safe_next(next), 303)
        response.set_cookie(LANG_COOKIE, i18n.language(code), samesite="strict", path="/", max_age=365 * 86400)
        return response

    return r


