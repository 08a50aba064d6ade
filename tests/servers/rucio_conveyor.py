"""Rucio's own conveyor (submitter, poller, finisher) with the mock transfer tool, plus the copy.

Runs inside the Rucio server's environment; the mock tool copies no bytes, so this loop does.
"""

import os
import shutil
import sys
import time
from pathlib import Path
from urllib.parse import urlparse


def local_path(url: str) -> Path:
    """The file behind a `file://` PFN."""
    return Path(urlparse(url).path)


def copy_submitted() -> None:
    """Copy each submitted transfer; a missing source fails the request as FTS would."""
    from rucio.db.sqla import models
    from rucio.db.sqla.constants import RequestState
    from rucio.db.sqla.session import get_session
    from sqlalchemy import select

    session = get_session()
    try:
        requests = session.execute(
            select(models.Request).where(models.Request.state == RequestState.SUBMITTED)
        ).scalars()
        for request in requests:
            sources = session.execute(
                select(models.Source).where(models.Source.request_id == request.id)
            ).scalars()
            urls = [s.url for s in sources if s.url and local_path(s.url).is_file()]
            if not urls or not request.dest_url:
                request.state = RequestState.FAILED
                request.err_msg = "TRANSFER source file does not exist"
                continue
            target = local_path(request.dest_url)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local_path(urls[0]), target)
        session.commit()
    finally:
        session.close()


def cycle() -> None:
    """One pass of the conveyor."""
    from rucio.daemons.conveyor.finisher import finisher
    from rucio.daemons.conveyor.poller import poller
    from rucio.daemons.conveyor.submitter import submitter

    submitter(once=True, partition_wait_time=0, transfertools=["mock"], filter_transfertool=None)
    copy_submitted()
    poller(
        once=True,
        older_than=0,
        partition_wait_time=0,
        transfertool="mock",
        filter_transfertool=None,
    )
    finisher(once=True, partition_wait_time=0)


def main() -> None:
    """Cycle until the stop file appears (or once, with `once`)."""
    stop = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    interval = float(os.environ.get("CONVEYOR_INTERVAL", "0.2"))
    while True:
        cycle()
        if stop is None or stop.exists():
            return
        time.sleep(interval)


if __name__ == "__main__":
    main()
