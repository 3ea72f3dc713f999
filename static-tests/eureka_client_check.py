"""Drives the third-party Python Eureka client (py_eureka_client) against a running a8registry.

Usage: eureka_client_check.py EUREKA_URL REGISTRY_URL discover|register-only [NAMESPACE_TOKEN]

The client registers the app PYAPP with its default instance id (`127.0.0.1:pyapp:9000`, which it
sends percent-encoded), heartbeats every second, fetches the registry (XML) and its deltas,
changes its status to OUT_OF_SERVICE and back, and deregisters on stop. Between the steps this
script reads what a8registry holds through the Amalgam8 API, and prints every observation as one
JSON object on stdout; the Rust test decides what is right. With `register-only` the client does
not fetch the registry (it parses fetches as XML, and some prefixes answer JSON by default).
"""

import asyncio
import json
import sys
import time
import urllib.request

import py_eureka_client.eureka_client as eureka_client

APP = "PYAPP"


def registry_view(registry_url, token):
    """The instances of PYAPP as the Amalgam8 API lists them, all statuses."""
    request = urllib.request.Request(
        f"{registry_url}/api/v1/instances?service_name={APP}&status=ALL"
    )
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    return [{"id": i["id"], "status": i.get("status")} for i in body["instances"]]


def discovered(client):
    """What the client itself holds for PYAPP after its registry fetches."""
    if not client.should_discover:
        return None
    application = client.applications.get_application(APP)
    if application is None:
        return []
    return [
        {"id": i.instanceId, "status": i.status, "port": i.port.port}
        for i in application.instances
    ]


def discovered_when(client, status, limit=10.0):
    """What the client holds once its fetches show `status`, or after `limit` seconds: the client
    fetches every second, but a loaded machine may delay a fetch well past that."""
    deadline = time.monotonic() + limit
    while True:
        seen = discovered(client)
        if seen is None or (seen and seen[0]["status"] == status) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)


async def main():
    eureka_url, registry_url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else ""
    errors = []
    observations = {}
    client = eureka_client.EurekaClient(
        eureka_server=eureka_url,
        app_name="pyapp",
        instance_ip="127.0.0.1",
        instance_host="127.0.0.1",
        instance_port=9000,
        renewal_interval_in_secs=1,
        duration_in_secs=30,
        should_discover=(mode == "discover"),
        on_error=lambda kind, error: errors.append(f"{kind}: {error!r}"),
    )
    await client.start()
    observations["after_register"] = registry_view(registry_url, token)
    # Heartbeats (and delta fetches) run every second on the client's own thread.
    time.sleep(3.5)
    observations["discovered"] = discovered(client)

    await client.status_update("OUT_OF_SERVICE")
    observations["after_out_of_service"] = registry_view(registry_url, token)
    observations["discovered_out_of_service"] = discovered_when(client, "OUT_OF_SERVICE")

    await client.status_update("UP")
    observations["after_back_up"] = registry_view(registry_url, token)
    observations["discovered_back_up"] = discovered_when(client, "UP")

    await client.stop()
    observations["after_stop"] = registry_view(registry_url, token)
    observations["errors"] = errors
    print(json.dumps(observations))


if __name__ == "__main__":
    asyncio.run(main())
