"""A signed-in staff member over real HTTP, as a browser holds one: session cookie and CSRF token."""

from __future__ import annotations

import html
import re

import httpx


def hidden_inputs(page: str) -> dict[str, str]:
    """Hidden fields of a page as Django renders them (type, name, value in that order)."""
    return {name: html.unescape(value)
            for name, value in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page)}


def sign_in(base_url: str, *, username: str, password: str, timeout: float = 60) -> httpx.Client:
    """Signs in through the admin's login form; the client then carries the session cookie."""
    client = httpx.Client(base_url=base_url, timeout=timeout)
    token = hidden_inputs(client.get("/admin/login/").text)["csrfmiddlewaretoken"]
    response = client.post("/admin/login/", data={"username": username, "password": password,
                                                  "csrfmiddlewaretoken": token, "next": "/admin/"})
    assert (response.status_code, response.headers.get("location")) == (302, "/admin/"), response.text[:500]
    return client
