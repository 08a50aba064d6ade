"""uws/ as in ESAP's API gateway."""

from django.urls import include, path

urlpatterns = [path("uws/", include("uws.urls"))]
