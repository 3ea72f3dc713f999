#!/usr/bin/env python3
"""Time from a change at a catalog's source to its visibility through the registry. Not a test.

    catalog_pickup.py files DIR PORT TRIALS      # DIR is the server's --fs_catalog directory
    catalog_pickup.py eureka REMOTE LOCAL TRIALS # LOCAL mirrors REMOTE with --eureka_url

Each trial makes a new service appear at the source (a file rewritten and renamed into place, or
an instance registered on the remote registry), then reads GET /api/v1/services/<name> from the
registry every 5 ms until the service is listed. Trials start at random moments, so the source's
poll phase varies. Prints the pick-up times in milliseconds: min, median, max.
"""
import json
import os
import random
import sys
import time
import urllib.error
import urllib.request


def listed(port, service):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/services/{service}", timeout=5) as r:
            return len(json.load(r).get("instances", [])) > 0
    except urllib.error.HTTPError:
        return False


def wait_listed(port, service, started):
    while not listed(port, service):
        if time.monotonic() - started > 60:
            sys.exit(f"catalog_pickup.py: {service} was not listed within 60 s")
        time.sleep(0.005)
    return (time.monotonic() - started) * 1000


def file_trial(directory, port, trial):
    service = f"pickup-file-{trial}"
    instances = [{"service_name": f"pickup-file-{i}", "endpoint": {"type": "tcp", "value": f"10.3.0.{i % 250}:80"}}
                 for i in range(trial + 1)]
    temporary = os.path.join(directory, ".default.json.tmp")
    with open(temporary, "w") as f:
        json.dump({"instances": instances}, f)
    started = time.monotonic()
    os.rename(temporary, os.path.join(directory, "default.json"))
    return wait_listed(port, service, started)


def eureka_trial(remote, local, trial):
    service = f"pickup-eureka-{trial}"
    body = json.dumps({"service_name": service, "endpoint": {"type": "tcp", "value": f"10.4.0.{trial % 250}:80"},
                       "ttl": 600}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{remote}/api/v1/instances", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=5).read()
    return wait_listed(local, service, time.monotonic())


def main():
    mode, first, second, trials = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    times = []
    for trial in range(trials):
        time.sleep(random.uniform(0, 1.0))
        if mode == "files":
            times.append(file_trial(first, int(second), trial))
        else:
            times.append(eureka_trial(int(first), int(second), trial))
    times.sort()
    print(f"{times[0]:.0f} {times[len(times) // 2]:.0f} {times[-1]:.0f}")


if __name__ == "__main__":
    main()
