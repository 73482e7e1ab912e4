#!/usr/bin/env python3
"""A never-answering upstream: accepts TCP connections on 127.0.0.1:PORT,
reads and discards whatever arrives, and never writes a byte back. The peer
closing is the only way a connection ends.

    python3 bench/blackhole.py PORT
"""

import asyncio
import sys


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(hold, "127.0.0.1", port, backlog=4096)
    print(f"blackhole listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
