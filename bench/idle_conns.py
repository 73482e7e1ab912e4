#!/usr/bin/env python3
"""Opens N idle keep-alive connections (optionally mutual TLS) to one
address and holds them open.

Each connection makes one POST (so it is a real keep-alive connection past
the server's header timeout, not a half-open one), reads the whole answer,
then stays idle. When all are open (or failed) it prints one line

    ready open=N failed=F seconds=S

and keeps them open until its standard input closes, or `--hold` seconds
pass, whichever is first. Every wait is bounded.

    python3 bench/idle_conns.py --port 28443 --n 10000 \\
        --ca ca.pem --cert client.pem --key client-key.pem --body body.json \\
        --path '/im?SdkAppid=1400000001&CallbackCommand=Group.CallbackBeforeSendMsg'
"""

import argparse
import asyncio
import asyncio.sslproto
import os
import resource
import ssl
import sys
import time


def raise_nofile(want: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def read_answer(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--parallel", type=int, default=200)
    ap.add_argument("--ca")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--sni", default="localhost")
    ap.add_argument("--path", default="/")
    ap.add_argument("--body", required=True)
    ap.add_argument("--open-timeout", type=float, default=240.0)
    ap.add_argument("--hold", type=float, default=300.0)
    args = ap.parse_args()
    assert args.host in ("127.0.0.1", "localhost", "::1"), "loopback only"
    raise_nofile(args.n + 4096)
    # asyncio gives every TLS connection a 256 KiB read buffer (2.5 GiB for
    # 10,000 connections); a TLS record is at most 16 KiB.
    if hasattr(asyncio.sslproto.SSLProtocol, "max_size"):
        asyncio.sslproto.SSLProtocol.max_size = 32 * 1024

    ctx = None
    if args.ca:
        ctx = ssl.create_default_context(cafile=args.ca)
        ctx.load_cert_chain(args.cert, args.key)
        ctx.set_alpn_protocols(["http/1.1"])
    body = open(args.body, "rb").read()
    request = (
        f"POST {args.path} HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    gate = asyncio.Semaphore(args.parallel)
    conns = []
    failures = {}

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        args.host, args.port, ssl=ctx,
                        server_hostname=args.sni if ctx else None,
                    ),
                    30,
                )
                writer.write(request)
                status = await asyncio.wait_for(read_answer(reader), 30)
                if status != 200:
                    raise RuntimeError(f"status {status}")
                conns.append((reader, writer))
            except Exception as e:  # noqa: BLE001 - every failure is counted
                key = type(e).__name__
                failures[key] = failures.get(key, 0) + 1

    started = time.monotonic()
    tasks = [asyncio.create_task(one()) for _ in range(args.n)]
    done, pending = await asyncio.wait(tasks, timeout=args.open_timeout)
    for t in pending:
        t.cancel()
    if pending:
        failures["open_timeout"] = len(pending)
    took = time.monotonic() - started
    detail = ",".join(f"{k}:{v}" for k, v in sorted(failures.items())) or "-"
    print(
        f"ready open={len(conns)} failed={sum(failures.values())} "
        f"seconds={took:.1f} errors={detail}",
        flush=True,
    )

    # Hold until stdin closes or --hold passes.
    loop = asyncio.get_running_loop()
    eof = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(eof, args.hold)
    except asyncio.TimeoutError:
        pass
    alive = sum(1 for r, _ in conns if not r.at_eof())
    print(f"closing alive={alive}", flush=True)
    for _, w in conns:
        w.close()
    return 0


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    code = loop.run_until_complete(main())
    sys.stdout.flush()
    # The stdin reader thread may still be blocked: leave without joining it.
    os._exit(code)

