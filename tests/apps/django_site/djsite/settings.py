"""Settings of the small Django site served by both gunicorn and corral in
tests/frameworks.rs. No database, no templates, DEBUG off."""

SECRET_KEY = "corral-tests-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "djsite.urls"
WSGI_APPLICATION = "djsite.wsgi.application"
INSTALLED_APPS = []
DATABASES = {}
TEMPLATES = []
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# A session cookie: with an age, Expires would be "now + 1 year", which
# differs by the second between two servers.
CSRF_COOKIE_AGE = None
USE_TZ = True
USE_I18N = False
