"""Why the router is built on asyncio + uvloop + httptools: the same proxying job done by
alternative Python stacks, measured side by side against the same runtime on this machine.

Candidates (each a minimal forwarder of GET / to the runtime, no validation or auth, so the
comparison flatters the alternatives):
  relay          uvloop protocol byte relay (no HTTP parsing at all): the lower bound of cost
  fastapi-httpx  FastAPI catch-all route + one shared httpx.AsyncClient, streamed response
  aiohttp        aiohttp.web catch-all handler + one shared aiohttp.ClientSession
  sandbox-router this project's router (full validation, auth and metrics on)
Output: a table and JSON (default out/bench/router_stacks.json). aiohttp is optional (skipped
when not installed; see images/router/requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_bench import REPO, TOKEN, ensure_wrk, free_port, run_wrk, start, stop  # noqa: E402


def serve_relay(port: int, upstream_port: int) -> None:
    """Byte relay: each accepted connection is spliced to its own runtime connection (protocols)."""
    import uvloop

    class Pipe(asyncio.Protocol):
        def __init__(self, peer: Pipe | None = None) -> None:
            self.peer = peer
            self.transport: asyncio.Transport | None = None
            self.backlog: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            if self.peer is not None:  # the runtime side: flush what the client already sent
                self.peer.peer = self
                transport.writelines(self.peer.backlog)  # type: ignore[attr-defined]
                self.peer.backlog = []

        def data_received(self, data: bytes) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.write(data)
            else:
                self.backlog.append(data)

        def connection_lost(self, exc: Exception | None) -> None:
            if self.peer is not None and self.peer.transport is not None:
                self.peer.transport.close()

    class Front(Pipe):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            asyncio.get_running_loop().create_task(asyncio.get_running_loop().create_connection(
                lambda: Pipe(self), "127.0.0.1", upstream_port))

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Front, "127.0.0.1", port, backlog=4096)
        await server.serve_forever()

    uvloop.run(main())


def serve_fastapi_httpx(port: int, upstream_port: int) -> None:
    """FastAPI + httpx: the stack of the upstream Python router, reduced to forwarding."""
    import httpx
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse

    app = FastAPI()
    client = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_keepalive_connections=100))

    @app.get("/healthz")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(request: Request, path: str) -> StreamingResponse:
        upstream = client.build_request(request.method, f"http://127.0.0.1:{upstream_port}/{path}",
                                        headers=[(k, v) for k, v in request.headers.items() if k != "host"],
                                        content=request.stream())
        response = await client.send(upstream, stream=True)
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                 headers={k: v for k, v in response.headers.items()
                                          if k not in ("content-length", "transfer-encoding", "connection")},
                                 background=None)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def serve_aiohttp(port: int, upstream_port: int) -> None:
    """aiohttp server + shared ClientSession, streamed response."""
    import uvloop
    from aiohttp import ClientSession, TCPConnector, web

    async def main() -> None:
        session = ClientSession(connector=TCPConnector(limit=0, keepalive_timeout=4))

        async def health(_request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        async def forward(request: web.Request) -> web.StreamResponse:
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            async with session.request(request.method, f"http://127.0.0.1:{upstream_port}{request.path_qs}",
                                       headers=headers, data=request.content if request.can_read_body else None,
                                       auto_decompress=False) as upstream:
                response = web.StreamResponse(status=upstream.status, headers={
                    k: v for k, v in upstream.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")})
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response

        app = web.Application()
        app.router.add_get("/healthz", health)
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
        await asyncio.Event().wait()

    uvloop.run(main())


SERVERS = {"relay": serve_relay, "fastapi-httpx": serve_fastapi_httpx, "aiohttp": serve_aiohttp}


def main() -> int:
    """Benchmark each stack at one connection level and write the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / os.environ.get("OUT_DIR", "out") / "bench" / "router_stacks.json"))
    args = parser.parse_args()
    if args.serve:
        SERVERS[args.serve](args.port, args.upstream_port)
        return 0
    ensure_wrk()
    base = Path(tempfile.mkdtemp(prefix="router-stacks-"))
    runtime_port = free_port()
    runtime = start("sandbox_runtime", REPO / "images" / "runtime",
                    {"SANDBOX_HOST": "127.0.0.1", "SANDBOX_PORT": str(runtime_port), "SANDBOX_BASE_DIR": str(base),
                     "SANDBOX_LOG_LEVEL": "warning", "SANDBOX_ACCESS_LOG": "false"},
                    f"http://127.0.0.1:{runtime_port}/")
    candidates: dict[str, tuple[Any, int, dict[str, str]]] = {}
    runs: dict[str, list[dict[str, Any]]] = {"direct": []}
    load_before = os.getloadavg()
    try:
        for name in ("relay", "fastapi-httpx", "aiohttp", "sandbox-router"):
            if name == "aiohttp" and importlib.util.find_spec("aiohttp") is None:
                print("aiohttp not installed: skipped (pip install -r images/router/requirements-bench.txt)")
                continue
            port = free_port()
            if name == "sandbox-router":
                proc = start("sandbox_router", REPO / "images" / "router",
                             {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(port), "ROUTER_AUTH_TOKEN": TOKEN,
                              "ROUTER_ALLOW_LOOPBACK_POD_IP": "true", "ROUTER_LOG_LEVEL": "WARNING",
                              "ROUTER_RESOLVER": "dns"},
                             f"http://127.0.0.1:{port}/healthz")
                headers = {"Authorization": f"Bearer {TOKEN}", "X-Sandbox-ID": "bench",
                           "X-Sandbox-Port": str(runtime_port), "X-Sandbox-Pod-IP": "127.0.0.1"}
            else:
                proc = _start_script(name, port, runtime_port, "/" if name == "relay" else "/healthz")
                headers = {}
            candidates[name] = (proc, port, headers)
            runs[name] = []
            run_wrk(f"http://127.0.0.1:{port}/", args.connections, 1, headers)  # warm-up
        for _ in range(args.rounds):  # interleaved, so slow phases of the shared machine hit all stacks
            runs["direct"].append(run_wrk(f"http://127.0.0.1:{runtime_port}/", args.connections, args.seconds,
                                          {}, {"runtime": runtime.pid}))
            for name, (proc, port, headers) in candidates.items():
                runs[name].append(run_wrk(f"http://127.0.0.1:{port}/", args.connections, args.seconds, headers,
                                          {"runtime": runtime.pid, "proxy": proc.pid}))
    finally:
        for proc, _port, _headers in candidates.values():
            stop(proc)
        stop(runtime)
    results = {name: sorted(rs, key=lambda r: r["rps"])[len(rs) // 2] for name, rs in runs.items()}
    direct_rps = results["direct"]["rps"]
    for result in results.values():
        result["ratio_to_direct"] = round(result["rps"] / direct_rps, 3)
    report = {"connections": args.connections, "seconds": args.seconds, "rounds": args.rounds,
              "cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": results, "all_runs": runs,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"stack comparison at c={args.connections}, {args.rounds} interleaved round(s) x {args.seconds}s, median "
          f"(load avg {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    print(f"{'stack':>15} {'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8} {'proxy CPU us/req':>17}")
    for name, result in results.items():
        cpu = result.get("proxy_cpu_us_per_request", "-")
        print(f"{name:>15} {result['rps']:>9.0f} {result['ratio_to_direct']:>6.2f} "
              f"{result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} {cpu:>17}")
    print(f"json: {out}")
    return 0


def _start_script(name: str, port: int, upstream_port: int, health: str):
    """Start one candidate of this script in its own process and wait for it."""
    import subprocess
    import urllib.request

    proc = subprocess.Popen([sys.executable, __file__, "--serve", name, "--port", str(port),
                             "--upstream-port", str(upstream_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{health}", timeout=1).read()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited with {proc.returncode}")
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"{name} did not start")


if __name__ == "__main__":
    sys.exit(main())
