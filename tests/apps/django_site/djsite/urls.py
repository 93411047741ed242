from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("hello/<str:name>/", views.hello),
    path("search/", views.search),
    path("json/", views.json_view),
    path("form/", views.form),
    path("upload/", views.upload),
    path("echo/", views.echo),
    path("csrf-form/", views.csrf_form),
    path("redirect/", views.redirect_relative),
    path("redirect/external/", views.redirect_external),
    path("redirect/permanent/", views.redirect_permanent),
    path("after-post/", views.after_post),
    path("target/", views.target),
    path("cookies/set/", views.cookies_set),
    path("cookies/clear/", views.cookies_clear),
    path("cookies/", views.cookies),
    path("headers/", views.headers),
    path("custom-status/", views.custom_status),
    path("stream/", views.stream),
    path("boom/", views.boom),
]
