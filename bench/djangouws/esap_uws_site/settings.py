"""Django settings: django-uws + DRF on SQLite, bearer-token authentication.

ESAP's gateway authenticates with OIDC sessions; a DRF token with the Bearer keyword costs the
same per request as our gateway's token check, so the comparison is of the UWS apps.
DJANGO_UWS_PAGINATED=1 adds ESAP's global pagination, as under `esap-api/uws/`.
"""

import os
from pathlib import Path

BASE_DIR = Path(os.environ.get("DJANGO_UWS_DIR", "/tmp/django-uws"))
SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "rest_framework",
    "rest_framework.authtoken",
    "uws",
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "esap_uws_site.urls"
DATABASES = {
    "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(BASE_DIR / "uws.sqlite3")}
}
USE_TZ = True
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["esap_uws_site.auth.BearerTokenAuthentication"],
}
if os.environ.get("DJANGO_UWS_PAGINATED"):  # as ESAP mounts it: its global pagination
    REST_FRAMEWORK["DEFAULT_PAGINATION_CLASS"] = "esap_uws_site.pagination.EsapPagination"
CELERY_TASK_ALWAYS_EAGER = False
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
