"""Where a warm claim's first command goes: per claim from the stack's pool, the SDK's Sandbox
lookup (its first request resolves the pod IP), a GET / through the router (a new upstream
connection, no process), then the bench's first command twice (first and second process start in
the sandbox). Needs a deployed stack; GAP=<s> spaces the claims (default 0, back to back).

    PYTHONPATH=. python bench/first_command.py
"""
import time, statistics, requests
from automation.paths import default_paths
from automation.session import stack_session

from automation.bench import FIRST_EXEC_COMMAND as CMD
rows = []
with stack_session(default_paths(), "gvisor") as s:
    client, target = s.client, s.target
    for i in range(6):
        sb = client.create_sandbox(target.warm_pool, namespace=target.namespace, sandbox_ready_timeout=120)
        try:
            t0 = time.monotonic(); sb.get_pod_ip(); t1 = time.monotonic()
            sb.connector.send_request("GET", "")
            t2 = time.monotonic()
            sb.commands.run(CMD); t3 = time.monotonic()
            sb.commands.run(CMD); t4 = time.monotonic()
            rows.append((t1 - t0, t2 - t1, t3 - t2, t4 - t3))
            print(f"claim {i}: sandbox GET {t1-t0:.3f}s  health via router {t2-t1:.3f}s  first exec {t3-t2:.3f}s  second exec {t4-t3:.3f}s", flush=True)
        finally:
            client.delete_sandbox(sb.claim_name, namespace=target.namespace)
        time.sleep(float(__import__("os").environ.get("GAP", "0")))
for name, col in zip(("sandbox GET", "health via router", "first exec", "second exec"), zip(*rows)):
    print(f"median {name}: {statistics.median(col):.3f}s")
