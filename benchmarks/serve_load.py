"""Latency and throughput of `vlprompt serve` on 127.0.0.1.

    python benchmarks/serve_load.py [--run RUN --images DIR] [--clients 8] [--requests 200]
                                    [--threads 2]

Without --run, a CoOp run on the mini world's `mini_colors` (tiny CLIP, 1 shot, 1 epoch) is
trained into a temporary folder. The server (`vlprompt serve RUN --port P`, its torch threads
set by --threads) is started as a separate process; then, with distinct mini-world test images
(64x64 PNG) sent as multipart uploads:

- latency: one client, one image per request, one request at a time (5 warm-up requests, then
  50): median and 90th percentile of the wall time per request;
- throughput: --clients threads, each with its own connection, send --requests one-image
  requests in all; images per second over the wall time, and the mean batch the server formed
  (from /health's `images` / `batches`);
- one request of 32 images: images per second.

Prints a Markdown table. The server is stopped with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"


def _train(folder: Path) -> Path:
    import vlprompt

    run_dir = folder / "run"
    vlprompt.train("coop", "mini_colors", root=folder / "mini", shots=1, epochs=1,
                   evaluate=False, progress=False, output_dir=run_dir)  # fmt: skip
    return run_dir


def _images(folder: Path, pattern: str, n: int) -> list[tuple[str, bytes]]:
    paths = sorted(folder.rglob(pattern))[:n]
    return [(f"{i}-{p.name}", p.read_bytes()) for i, p in enumerate(paths)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(run_dir: Path, port: int, threads: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "vlprompt.cli", "serve", str(run_dir), "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    with httpx.Client(base_url=url, trust_env=False) as client:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.get("/health", timeout=2).status_code == 200:
                    return proc
            except httpx.TransportError:
                time.sleep(0.2)
    proc.kill()
    sys.exit(f"the server did not start: {log.read_text()[-2000:]}")


def _post(client: httpx.Client, images: list[tuple[str, bytes]]) -> None:
    files = [("files", (name, data, "image/png")) for name, data in images]
    answer = client.post("/predict", files=files)
    answer.raise_for_status()


def _latency(url: str, images: list) -> list[float]:
    times = []
    with httpx.Client(base_url=url, trust_env=False, timeout=60) as client:
        for i in range(55):
            start = time.perf_counter()
            _post(client, [images[i % len(images)]])
            if i >= 5:
                times.append(time.perf_counter() - start)
    return times


def _throughput(url: str, images: list, clients: int, requests: int) -> tuple[float, float]:
    with httpx.Client(base_url=url, trust_env=False) as client:
        before = client.get("/health").json()

    def worker(k: int) -> None:
        with httpx.Client(base_url=url, trust_env=False, timeout=120) as client:
            for i in range(k, requests, clients):
                _post(client, [images[i % len(images)]])

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker, k) for k in range(clients)]:
            future.result()
    wall = time.perf_counter() - start
    with httpx.Client(base_url=url, trust_env=False) as client:
        after = client.get("/health").json()
    batch = (after["images"] - before["images"]) / max(1, after["batches"] - before["batches"])
    return requests / wall, batch


def _one_request(url: str, images: list) -> float:
    with httpx.Client(base_url=url, trust_env=False, timeout=120) as client:
        _post(client, images[:32])  # warm-up
        start = time.perf_counter()
        _post(client, images[:32])
        return 32 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: train a mini one)")
    parser.add_argument("--images", type=Path, help="a folder of images to send (with --run)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2, help="the server's OMP_NUM_THREADS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        os.environ["HOME"] = str(folder / "home")
        if args.run is None:
            run_dir, images = _train(folder), _images(folder, "test/*/*.png", 64)
        else:
            run_dir, images = args.run, _images(args.images or Path("."), "*.[pjPJ][npNP]*g", 64)
        if len(images) < 32:
            sys.exit("need at least 32 images: pass --images DIR with --run")
        port = _free_port()
        proc = _start(run_dir, port, args.threads, folder / "server.log")
        url = f"http://127.0.0.1:{port}"
        try:
            times = sorted(_latency(url, images))
            rate, batch = _throughput(url, images, args.clients, args.requests)
            bulk = _one_request(url, images)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    p90 = times[int(0.9 * len(times)) - 1]
    print("| measure | value |\n|---|---|")
    print(f"| latency, one image per request (median / p90) | "
          f"{1000 * statistics.median(times):.1f} / {1000 * p90:.1f} ms |")  # fmt: skip
    print(f"| throughput, {args.clients} clients, one image per request | {rate:.0f} images/s "
          f"(mean batch {batch:.1f}) |")  # fmt: skip
    print(f"| one request of 32 images | {bulk:.0f} images/s |")


if __name__ == "__main__":
    main()
