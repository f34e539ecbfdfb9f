"""Partner simulators: real HTTP servers on 127.0.0.1 that stand in for outside systems in tests and demos.

Each can be run on its own (``python -m integrations.simulators.<name> --port N``) or started in a
background thread from Python (``with SmsGatewaySimulator() as sms: ...``); either way it stops cleanly.
"""
