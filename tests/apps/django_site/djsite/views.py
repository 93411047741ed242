"""Views of the small Django site. Everything they answer is deterministic
except what Django makes random on purpose (the CSRF secret and token),
which the test normalises."""

import hashlib
import json

from django.http import (
    HttpResponse,
    HttpResponsePermanentRedirect,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.utils.html import escape
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

# A fixed expiry: "now + N" would differ by the second between two servers.
COOKIE_EXPIRES = "Thu, 02 Jan 2031 03:04:05 GMT"


def index(request):
    return HttpResponse("Hello from Django\n", content_type="text/plain; charset=utf-8")


def hello(request, name):
    return HttpResponse("Hello, %s!\n" % escape(name))


def search(request):
    return JsonResponse(
        {
            "args": dict(request.GET.lists()),
            "query_string": request.META.get("QUERY_STRING"),
            "full_path": request.get_full_path(),
            "absolute": request.build_absolute_uri(),
        }
    )


@csrf_exempt
def json_view(request):
    if request.method == "GET":
        return JsonResponse({"name": "corral", "tags": ["wsgi", "rust"], "nested": {"n": 1, "ok": True}, "text": "naïve ✓"})
    return JsonResponse({"received": json.loads(request.body), "content_type": request.content_type})


@csrf_exempt
@require_POST
def form(request):
    return JsonResponse(
        {
            "form": dict(request.POST.lists()),
            "content_type": request.META.get("CONTENT_TYPE"),
            "content_length": request.META.get("CONTENT_LENGTH"),
        }
    )


@csrf_exempt
@require_POST
def upload(request):
    files = {}
    for field in request.FILES:
        for f in request.FILES.getlist(field):
            data = f.read()
            files.setdefault(field, []).append(
                {
                    "filename": f.name,
                    "content_type": f.content_type,
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
    return JsonResponse({"form": dict(request.POST.lists()), "files": files})


@csrf_exempt
@require_POST
def echo(request):
    data = request.body
    return JsonResponse({"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "head": data[:40].decode("latin-1")})


def csrf_form(request):
    """GET: a form carrying the CSRF token (and the csrftoken cookie).
    POST: accepted only with the cookie and the token (CsrfViewMiddleware)."""
    if request.method == "POST":
        return HttpResponse("Thanks, %s!\n" % escape(request.POST.get("name", "")))
    token = get_token(request)
    return HttpResponse(
        '<form method="post">'
        '<input type="hidden" name="csrfmiddlewaretoken" value="%s">'
        '<input name="name"></form>\n' % token
    )


def redirect_relative(request):
    return redirect("/target/")


def redirect_external(request):
    return HttpResponseRedirect(request.build_absolute_uri("/target/"))


def redirect_permanent(request):
    return HttpResponsePermanentRedirect("/search/?q=a+b&n=1")


@csrf_exempt
@require_POST
def after_post(request):
    # Post/Redirect/Get.
    resp = redirect("/target/?done=" + request.POST.get("name", ""))
    resp.status_code = 303
    return resp


def target(request):
    return HttpResponse("You have arrived.\n", content_type="text/plain")


def cookies_set(request):
    resp = HttpResponse("cookies set\n", content_type="text/plain")
    resp.set_cookie("flavour", "oatmeal raisin", expires=COOKIE_EXPIRES, httponly=True, samesite="Lax")
    resp.set_cookie("visits", "1", path="/")
    return resp


def cookies_clear(request):
    resp = HttpResponse("cookie cleared\n", content_type="text/plain")
    resp.delete_cookie("visits")
    return resp


def cookies(request):
    return JsonResponse({"cookies": request.COOKIES, "raw": request.META.get("HTTP_COOKIE")})


def headers(request):
    meta = request.META
    return JsonResponse(
        {
            "host": request.get_host(),
            "url": request.build_absolute_uri(),
            "scheme": request.scheme,
            "remote_addr": meta.get("REMOTE_ADDR"),
            "custom": meta.get("HTTP_X_CUSTOM"),
            "user_agent": meta.get("HTTP_USER_AGENT"),
            # Not SERVER_NAME/SERVER_PORT: the two servers listen on different
            # ports, and gunicorn reports its socket's address there.
            "environ": {
                k: meta.get(k)
                for k in ("SERVER_PROTOCOL", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH")
            },
        }
    )


def custom_status(request):
    return HttpResponse("a custom reason phrase\n", status=299, reason="Custom Reason", content_type="text/plain")


def stream(request):
    return StreamingHttpResponse(("line %d\n" % i for i in range(5)), content_type="text/plain")


def boom(request):
    raise RuntimeError("deliberate failure for the 500 test")
