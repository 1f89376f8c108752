"""Starting the cloud's process: it is this child's answer that counts as started."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from dmg.cloud.server import start_cloud_subprocess
from dmg.errors import Fatal
from settings import Settings


class _Healthy(http.server.BaseHTTPRequestHandler):
    """Another site's cloud, as far as a health check can tell: 200 to everything."""

    def do_GET(self) -> None:  # the stdlib handler's name
        body = b'{"status": "ok"}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_port_served_by_another_cloud_is_an_error_not_this_sites_cloud(tmp_path: Path) -> None:
    # given a port another process already serves, healthy (a second site's cloud on 8050)
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Healthy)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    port = other.server_address[1]
    try:
        # when this site's cloud is started on it
        with pytest.raises(Fatal) as caught:
            start_cloud_subprocess(Settings(data_dir=tmp_path, log_level="WARNING"),
                                   bind=f"127.0.0.1:{port}", timeout=60)
        # then it fails saying its own process could not serve (not a foreign cloud taken for it)
        assert "exited" in str(caught.value), caught.value
        assert "address already in use" in (caught.value.hint or "").lower(), caught.value.hint
    finally:
        other.shutdown()
        other.server_close()
