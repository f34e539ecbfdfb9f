"""The baseline of ``bench/ingest.py``: Litestar's hello world, served exactly as ``carbon-rewards serve`` serves.

python bench/hello_app.py --port 8100 [--workers N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import uvicorn
from litestar import Litestar, get

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the workers import bench.hello_app

from api.workers import run_workers  # noqa: E402


@get("/hello", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


def create() -> Litestar:
    return Litestar(route_handlers=[hello])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1, help="processes, as `carbon-rewards serve --workers`")
    args = parser.parse_args()
    # As api.cli serves: one worker serves in this process, several are run by api.workers.
    if args.workers == 1:
        uvicorn.run("bench.hello_app:create", factory=True, host=args.host, port=args.port, log_level="warning")
    else:
        run_workers("bench.hello_app:create", host=args.host, port=args.port, workers=args.workers, log_level="warning")


if __name__ == "__main__":
    main()
