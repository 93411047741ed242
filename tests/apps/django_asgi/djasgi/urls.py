from django.urls import path

from . import views

urlpatterns = [
    path("", views.hello),
    path("sync/", views.sync),
    path("meta/", views.meta),
    path("café/", views.meta),
    path("boom/", views.boom),
    path("astream/", views.astream),
    path("sstream/", views.sstream),
    path("file/", views.fileresp),
    path("upload/", views.upload),
    path("body/", views.body),
    path("form/", views.form),
    path("slow/", views.slow),
    path("long/", views.longview),
    path("events/", views.events),
    path("pid/", views.pid),
]
