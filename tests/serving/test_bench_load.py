"""The load generator of ``nba bench serve``: an open loop (requests on fixed times, whatever the answers) and its figures."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from serving.bench import Shot, load_figures, open_loop


class _Slow(BaseHTTPRequestHandler):
    """Answers after 0.3 s: 200 with two suggestions, or 503 for bodies asking for it."""

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        time.sleep(0.3)
        status = 503 if body.get("shed") else 200
        data = json.dumps({"results": [{"suggestions": [{"suggestion_id": "a"}, {"suggestion_id": "b"}]}]} if status == 200 else {}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_requests_go_out_on_schedule_whatever_the_answers() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/recommend"
        bodies = [b'{"shed": false}', b'{"shed": false}', b'{"shed": true}']
        t = time.perf_counter()
        shots, lag_ms = open_loop(url, bodies, rate=50, duration_s=0.6, timeout_s=5)
        wall = time.perf_counter() - t
    finally:
        server.shutdown()
    assert len(shots) == 30
    assert wall < 3.0  # one client in a closed loop would need 30 x 0.3 = 9 s
    assert sorted({s.status for s in shots}) == [200, 503]
    assert all(s.latency_ms >= 290 for s in shots)
    assert sum(s.suggestions for s in shots) == 2 * sum(s.status == 200 for s in shots) == 40


def test_phase_figures() -> None:
    shots = [Shot(200, 10.0, 3)] * 8 + [Shot(503, 2.0, 0), Shot(-1, 10_000.0, 0)]
    f = load_figures("x", shots, wall_s=2.0)
    assert f["x_requests"] == 10 and f["x_success_share"] == 0.8 and f["x_shed_503_share"] == 0.1
    assert f["x_other_failures"] == 1 and f["x_client_timeouts"] == 1 and f["x_answered_per_second"] == 4.0
    assert f["x_accepted_p99_ms"] == 10.0 and f["x_503_p99_ms"] == 2.0
