"""``carbon-rewards simulate``: run a partner simulator, or the carbon exchange's, for demos."""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any


def _share(text: str) -> float:
    try:
        share = float(text)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise argparse.ArgumentTypeError("a share from 0 to 1, e.g. 0.2")
    return share


def add_simulate_command(commands: Any) -> None:
    """The ``simulate`` subcommand's arguments, on the CLI's subparsers."""
    simulate = commands.add_parser(
        "simulate",
        help="run a partner simulator (transit, recycling, second-hand) or the carbon exchange's, for demos",
        description="Serves the partner's side (accounts, link codes, records) until Ctrl-C. The exchange "
        "simulator takes batches at POST /batches with the bearer token in CARBON_EXCHANGE_TOKEN. With "
        "CARBON_SIM_OPERATOR_TOKEN (an admin's access token) and --service-url it registers itself as a partner; "
        "with --push-every it pushes generated records. Secrets come from the environment: "
        "CARBON_SIM_WEBHOOK_SECRET and CARBON_SIM_CLIENT_SECRET when not registering itself.",
    )
    simulate.add_argument("kind", choices=("transit", "recycling", "second-hand", "exchange"))
    simulate.add_argument("--host", dest="sim_host", default="127.0.0.1")
    simulate.add_argument("--port", dest="sim_port", type=int, default=0, help="default: any free port")
    simulate.add_argument("--service-url", help="carbon-rewards base URL, e.g. http://127.0.0.1:8000")
    simulate.add_argument("--client-id", help="the partner's client id (when not registering itself)")
    simulate.add_argument("--accounts", type=int, default=3, help="accounts to open at start (default 3)")
    simulate.add_argument("--push-every", type=float, help="push a batch of generated records every N seconds")
    simulate.add_argument(
        "--refusals",
        type=_share,
        default=0.0,
        help="share of generated records the service refuses (unsourced categories, implausible figures, "
        "the receiving side of a reported trade); default 0: every record creditable",
    )
    simulate.add_argument("--batch", type=int, default=10, help="records per push (default 10)")
    simulate.add_argument(
        "--credentials-file",
        type=Path,
        help="where a simulator that registers itself writes its client id and secrets (mode 0600); "
        "default ./carbon-rewards-<kind>-partner.json",
    )


def simulate(args: argparse.Namespace) -> int:
    from integrations.simulators.partner import run_demo

    # Ctrl-C and SIGTERM stop the simulator cleanly, even when started from a shell that ignores
    # SIGINT for background jobs (Python then leaves it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.kind == "exchange":
        from integrations.simulators.base import serve_until_interrupted
        from integrations.simulators.exchange import ExchangeSimulator

        serve_until_interrupted(ExchangeSimulator(args.sim_host, args.sim_port))
        return 0
    run_demo(
        args.kind.replace("-", "_"),
        host=args.sim_host,
        port=args.sim_port,
        service_url=args.service_url,
        operator_token=os.environ.get("CARBON_SIM_OPERATOR_TOKEN"),
        webhook_secret=os.environ.get("CARBON_SIM_WEBHOOK_SECRET"),
        client_id=args.client_id,
        client_secret=os.environ.get("CARBON_SIM_CLIENT_SECRET"),
        accounts=args.accounts,
        push_every_s=args.push_every,
        batch=args.batch,
        refusals=args.refusals,
        credentials_file=args.credentials_file,
    )
    return 0
