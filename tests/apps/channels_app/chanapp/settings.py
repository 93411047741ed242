"""A Django project with Channels (chanapp.asgi:application): Django's ASGI
handler for HTTP, consumers for WebSockets, the in-memory channel layer.
No database: sessions are signed cookies and users come from
chanapp.auth.NameBackend."""

SECRET_KEY = "corral-test-only-" + "y" * 40
DEBUG = False
# Also the Origins AllowedHostsOriginValidator lets in.
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
ROOT_URLCONF = "chanapp.urls"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "channels",
]
MIDDLEWARE = [
    "django.middleware.common.CommonMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
DATABASES = {}
USE_TZ = True
SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
AUTHENTICATION_BACKENDS = ["chanapp.auth.NameBackend"]
ASGI_APPLICATION = "chanapp.asgi.application"
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
