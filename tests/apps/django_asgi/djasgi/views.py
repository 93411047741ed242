import asyncio
import hashlib
import os
import threading

from django.http import FileResponse, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import get_token
from django.views.decorators.csrf import csrf_exempt

META_KEYS = [
    "REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT", "QUERY_STRING", "PATH_INFO", "SCRIPT_NAME",
    "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH", "HTTP_HOST", "HTTP_X_CUSTOM",
    "HTTP_USER_AGENT", "HTTP_ACCEPT_LANGUAGE",
]


async def hello(request):
    return HttpResponse("hello from an async view")


def sync(request):
    # Django runs a sync view under ASGI in a thread (sync_to_async).
    where = "main thread" if threading.current_thread() is threading.main_thread() else "a thread"
    return HttpResponse("sync view in %s" % where)


def meta(request):
    return JsonResponse({
        "meta": {k: request.META.get(k) for k in META_KEYS},
        # corral adds an X-Request-ID to every request (README: request ids).
        "http_keys": sorted(k for k in request.META
                            if k.startswith("HTTP_") and k != "HTTP_X_REQUEST_ID"),
        "secure": request.is_secure(),
        "scheme": request.scheme,
        "path": request.path,
        "path_info": request.path_info,
        "GET": {k: request.GET.getlist(k) for k in request.GET},
        "absolute": request.build_absolute_uri(),
        "cookies": request.COOKIES,
    })


def boom(request):
    raise RuntimeError("boom in a Django view")


async def chunks():
    for i in range(3):
        yield "async chunk %d\n" % i
        await asyncio.sleep(0.01)


def sync_chunks():
    for i in range(3):
        yield "sync chunk %d\n" % i


async def astream(request):
    return StreamingHttpResponse(chunks(), content_type="text/plain")


def sstream(request):
    return StreamingHttpResponse(sync_chunks(), content_type="text/plain")


def fileresp(request):
    return FileResponse(open(__file__, "rb"), as_attachment=True, filename="views.py")


@csrf_exempt
def upload(request):
    files = {
        name: {
            "size": f.size,
            "sha256": hashlib.sha256(f.read()).hexdigest(),
            # Over FILE_UPLOAD_MAX_MEMORY_SIZE: TemporaryUploadedFile.
            "kind": type(f).__name__,
        }
        for name, f in request.FILES.items()
    }
    return JsonResponse({"files": files, "POST": dict(request.POST)})


@csrf_exempt
def body(request):
    # request.POST reads the form and checks DATA_UPLOAD_MAX_MEMORY_SIZE.
    return JsonResponse({"POST": dict(request.POST)})


def form(request):
    if request.method == "POST":
        return HttpResponse("accepted " + request.POST.get("x", ""))
    return HttpResponse(get_token(request))


# What happened to the views whose client left, in order.
EVENTS = []


async def slow(request):
    async def ticks():
        try:
            for i in range(2000):
                yield ("tick %d\n" % i) * 200
                await asyncio.sleep(0.02)
        except BaseException as e:
            EVENTS.append("stream: " + type(e).__name__)
            raise
        finally:
            EVENTS.append("stream: finally")

    return StreamingHttpResponse(ticks(), content_type="text/plain")


async def longview(request):
    try:
        await asyncio.sleep(20)
    except BaseException as e:
        EVENTS.append("view: " + type(e).__name__)
        raise
    return HttpResponse("late")


def events(request):
    return JsonResponse(EVENTS, safe=False)


def pid(request):
    return HttpResponse(str(os.getpid()))
