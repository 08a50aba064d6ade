"""Create the schema, a user with a token, and N PENDING jobs; print the token."""

import os
import sys

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "esap_uws_site.settings")
django.setup()

from django.contrib.auth.models import User  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from uws.models import Job, JobToken, Parameter  # noqa: E402

call_command("migrate", verbosity=0)
user, _ = User.objects.get_or_create(username="esap")
token, _ = Token.objects.get_or_create(user=user)
count = int(sys.argv[1])
jobs = Job.objects.bulk_create([Job() for _ in range(count)])
JobToken.objects.bulk_create([JobToken(job=j, key=JobToken.generate_key()) for j in jobs])
Parameter.objects.bulk_create(
    [Parameter(job=j, key="type", value="batch.submit", isPost=True) for j in jobs]
)
print(token.key, jobs[0].pk if jobs else "")
