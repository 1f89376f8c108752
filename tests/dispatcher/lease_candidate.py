"""A dispatcher-lease candidate process for the failover test.

``python -m tests.dispatcher.lease_candidate REDIS_URL NAME TTL``: competes for the
lease of gateway "gw" and, each time it wins, writes its epoch to the Redis hash
``test:acquired`` under NAME; counts its renewals in ``test:renewals``.
"""

from __future__ import annotations

import sys
import time

from dispatcher.lease import Lease
from dmg.site.boundary import SiteRedis


def main(url: str, name: str, ttl: float) -> None:
    client = SiteRedis.from_url(url)
    lease = Lease(client, key="dmg:gw:lease", epoch_key="dmg:gw:epoch", holder=name, ttl=ttl)
    while True:
        if lease.holding():
            if lease.renew():
                client.hincrby("test:renewals", name, 1)
        elif lease.acquire():
            client.hset("test:acquired", name, lease.epoch)
        time.sleep(ttl / 6)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
