"""ESAP's global DRF pagination, as its API gateway wraps every list (for the benchmark).

`page` and `page_size` (default 50, at most 500), and ESAP's envelope around the results.
"""

from typing import Any

from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response


class EsapPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_paginated_response(self, data: list[Any]) -> Response:
        page_size = self.get_page_size(self.request)
        return Response(
            {
                "description": "UWS jobs",
                "version": "0.1.0",
                "requested_page": self.page.number,
                "requested_page_size": page_size,
                "default_page_size": self.page_size,
                "max_page_size": self.max_page_size,
                "count": self.page.paginator.count,
                "pages": self.page.paginator.num_pages,
                "links": {"next": self.get_next_link(), "previous": self.get_previous_link()},
                "results": data,
            }
        )
