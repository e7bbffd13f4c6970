"""A TCP proxy that caps every connection's download rate, like a per-connection-limited CDN.

    python bench/throttle_proxy.py --upstream 127.0.0.1:5000 --rate 25e6
    python bench/throttle_proxy.py --upstream 127.0.0.1:5000 --rate 25e6 --slow 3 --slow-rate 1.25e6

listens on 127.0.0.1 (``--listen``, port 0 = any free port), prints
``listening on 127.0.0.1:PORT`` and forwards every connection to the upstream.
Bytes from the upstream to the client are paced to ``--rate`` bytes per second
per connection; the other direction is not limited. Many parallel connections
each get the full rate, which is exactly what parallel ranged downloads exploit.
``--slow N`` paces the N-th connection accepted (1 = the first) at
``--slow-rate`` instead, for as long as it lives: one bad path among many.
Loopback only: the upstream must be a 127.x address.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import time

_READ = 256 * 1024


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rate: float | None) -> None:
    started = time.monotonic()
    sent = 0
    try:
        while True:
            data = await reader.read(_READ if rate is None else min(_READ, max(16384, int(rate / 50))))
            if not data:
                break
            writer.write(data)
            await writer.drain()
            sent += len(data)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except RuntimeError:
            pass


class ThrottleProxy:
    def __init__(self, upstream_host: str, upstream_port: int, rate: float | None,
                 slow: int = 0, slow_rate: float | None = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.rate = rate
        self.slow = slow
        self.slow_rate = slow_rate
        self.accepted = 0

    async def handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        rate = self.slow_rate if self.accepted == self.slow else self.rate
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, up_writer, None),
            _pipe(up_reader, client_writer, rate),
        )


async def serve(listen: str, upstream: str, rate: float | None, slow: int = 0,
                slow_rate: float | None = None) -> None:
    up_host, _, up_port = upstream.rpartition(":")
    if not ipaddress.ip_address(up_host).is_loopback:
        raise SystemExit("the upstream must be a loopback address")
    host, _, port = listen.rpartition(":")
    proxy = ThrottleProxy(up_host, int(up_port), rate, slow, slow_rate)
    server = await asyncio.start_server(proxy.handle, host, int(port), limit=_READ * 4)
    bound = server.sockets[0].getsockname()
    print(f"listening on {bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="host:port to forward to (loopback)")
    parser.add_argument("--listen", default="127.0.0.1:0", help="host:port to listen on")
    parser.add_argument("--rate", type=float, default=25e6, help="bytes/s per connection (0 = no cap)")
    parser.add_argument("--slow", type=int, default=0, help="the N-th connection accepted is slow (0: none)")
    parser.add_argument("--slow-rate", type=float, default=None, help="bytes/s of the slow connection")
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.listen, args.upstream, args.rate or None, args.slow, args.slow_rate))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
