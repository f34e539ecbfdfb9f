"""The baseline of ``bench/ingest.py``: Litestar's hello world, served exactly as ``carbon-rewards serve`` serves.

python bench/hello_app.py --port 8100 [--workers N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from litestar import Litestar, get


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
    # The uvicorn arguments api.cli uses (with one worker, uvicorn.run serves in this process).
    uvicorn.run(
        "hello_app:create",
        factory=True,
        app_dir=str(Path(__file__).resolve().parent),
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
