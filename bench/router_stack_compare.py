"""Why the router is built on asyncio + uvloop + httptools: the same proxying job done by
alternative Python stacks, measured side by side against the same runtime on this machine.

Candidates (each a minimal forwarder of GET / to the runtime, no validation or auth, so the
comparison flatters the alternatives):
  relay          plain asyncio/uvloop TCP byte relay (no HTTP at all): the lower bound of cost
  fastapi-httpx  FastAPI catch-all route + one shared httpx.AsyncClient, streamed response
  aiohttp        aiohttp.web catch-all handler + one shared aiohttp.ClientSession
  sandbox-router this project's router (full validation, auth and metrics on)
Output: a table and JSON (default out/bench/router_stacks.json). aiohttp is optional (skipped
when not installed; see images/router/requirements-bench.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from router_bench import REPO, TOKEN, ensure_wrk, free_port, run_wrk, start, stop  # noqa: E402


def serve_relay(port: int, upstream_port: int) -> None:
    """Byte relay: every accepted connection is piped to a new runtime connection."""
    import uvloop

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
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
    results: dict[str, dict] = {}
    load_before = os.getloadavg()
    try:
        run_wrk(f"http://127.0.0.1:{runtime_port}/", args.connections, 1, {})
        results["direct"] = run_wrk(f"http://127.0.0.1:{runtime_port}/", args.connections, args.seconds, {})
        candidates = ["relay", "fastapi-httpx", "aiohttp", "sandbox-router"]
        for name in candidates:
            if name == "aiohttp":
                try:
                    import aiohttp  # noqa: F401
                except ImportError:
                    print("aiohttp not installed: skipped (pip install -r images/router/requirements-bench.txt)")
                    continue
            port = free_port()
            headers: dict[str, str] = {}
            if name == "sandbox-router":
                proc = start("sandbox_router", REPO / "images" / "router",
                             {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": str(port), "ROUTER_AUTH_TOKEN": TOKEN,
                              "ROUTER_ALLOW_LOOPBACK_POD_IP": "true", "ROUTER_LOG_LEVEL": "WARNING"},
                             f"http://127.0.0.1:{port}/healthz")
                headers = {"Authorization": f"Bearer {TOKEN}", "X-Sandbox-ID": "bench",
                           "X-Sandbox-Port": str(runtime_port), "X-Sandbox-Pod-IP": "127.0.0.1"}
            else:
                health = "/" if name == "relay" else "/healthz"
                proc = _start_script(name, port, runtime_port, health)
            try:
                run_wrk(f"http://127.0.0.1:{port}/", args.connections, 1, headers)
                results[name] = run_wrk(f"http://127.0.0.1:{port}/", args.connections, args.seconds, headers)
            finally:
                stop(proc)
            time.sleep(0.5)
    finally:
        stop(runtime)
    direct_rps = results["direct"]["rps"]
    for name, result in results.items():
        result["ratio_to_direct"] = round(result["rps"] / direct_rps, 3)
    report = {"connections": args.connections, "seconds": args.seconds, "cpus": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "results": results,
              "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"stack comparison at c={args.connections}, {args.seconds}s each "
          f"(load avg {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    print(f"{'stack':>15} {'req/s':>9} {'ratio':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, result in results.items():
        print(f"{name:>15} {result['rps']:>9.0f} {result['ratio_to_direct']:>6.2f} "
              f"{result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f}")
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
