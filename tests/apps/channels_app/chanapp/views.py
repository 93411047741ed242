import json

from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
from django.http import HttpResponse, JsonResponse

from .events import EVENTS


async def index(request):
    return HttpResponse("hello from Django under Channels")


def login(request):
    """Logs in the user whose id is ?id= (a signed session cookie)."""
    request.session[SESSION_KEY] = request.GET["id"]
    request.session[BACKEND_SESSION_KEY] = "chanapp.auth.NameBackend"
    return HttpResponse("logged in")


def whoami(request):
    return HttpResponse(request.user.username if request.user.is_authenticated else "anonymous")


def events(request):
    return JsonResponse(EVENTS, safe=False)


def boom(request):
    raise RuntimeError("boom in a Django view under Channels")
