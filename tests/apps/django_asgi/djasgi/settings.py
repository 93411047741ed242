"""A minimal Django project served through Django's own ASGI handler
(djasgi.asgi:application), as `django-admin startproject` lays one out."""

import os

SECRET_KEY = "corral-test-only-" + "x" * 40
# DJASGI_DEBUG=1 for Django's debug pages and its console logging.
DEBUG = os.environ.get("DJASGI_DEBUG") == "1"
# DJASGI_ALLOWED_HOSTS=a,b for a production-like list.
ALLOWED_HOSTS = os.environ.get("DJASGI_ALLOWED_HOSTS", "*").split(",")
ROOT_URLCONF = "djasgi.urls"
INSTALLED_APPS = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Checks every request's Host against ALLOWED_HOSTS (and APPEND_SLASH).
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
DATABASES = {}
USE_TZ = True
# Behind a proxy: the scheme it saw, from X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# DJASGI_SSL_REDIRECT=1: plain http is redirected to https, but for the
# paths DJASGI_REDIRECT_EXEMPT lists (regular expressions, comma-separated).
SECURE_SSL_REDIRECT = os.environ.get("DJASGI_SSL_REDIRECT") == "1"
SECURE_REDIRECT_EXEMPT = [p for p in os.environ.get("DJASGI_REDIRECT_EXEMPT", "").split(",") if p]
# Small, so that the tests' uploads are spooled to a temporary file and
# their form bodies can exceed the limit.
FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
DATA_UPLOAD_MAX_MEMORY_SIZE = 5000
