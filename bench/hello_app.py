"""The baseline of ``bench/ingest.py``: Litestar's hello world, served exactly as ``carbon-rewards serve`` serves.

python bench/hello_app.py --port 8100
"""

from __future__ import annotations

import argparse

import uvicorn
from litestar import Litestar, get


@get("/hello", sync_to_thread=False)
def hello() -> dict[str, str]:
    return {"hello": "world"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same uvicorn.Config arguments as api.cli._serve uses.
    config = uvicorn.Config(Litestar(route_handlers=[hello]), host=args.host, port=args.port, log_level="warning")
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
