"""uws/, and esap-api/uws/ as in ESAP's API gateway."""

from django.urls import include, path

urlpatterns = [path("uws/", include("uws.urls")), path("esap-api/uws/", include("uws.urls"))]
