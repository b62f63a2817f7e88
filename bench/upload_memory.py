"""How much the API's memory grows while a large upload streams into a transcription job.

Starts `speechq api` on the embedded default (SQLite, local-folder storage, no worker, so
the job just waits), with the transcription model's upload limit raised to 1 GB, then
streams multipart uploads of a WAV file over a raw socket and samples the API process's
RSS (VmRSS) every 20 ms. A 5 MB upload in the same run is the baseline.

    .venv/bin/python bench/upload_memory.py [--size-mb 500]

Aim (issue 4): RSS growth <= 50 MB for 500 MB. This prints figures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import yaml

MB = 1_000_000
CHUNK = b"\0" * (1 << 20)
MASTER_KEY = "sq-master-bench-upload"


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for {pid}")


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = rss_bytes(pid)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))


def wav_header(data_bytes: int, rate: int = 16000) -> bytes:
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def upload(port: int, size_bytes: int) -> tuple[int, float, bytes]:
    """Stream a multipart upload of `size_bytes` of WAV; return (status, seconds, body)."""
    boundary = "benchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nbig-stt\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + wav_header(size_bytes - 44)
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + (size_bytes - 44) + len(tail)
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        sock.sendall(
            (
                "POST /v1/jobs/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {MASTER_KEY}\r\n"
                f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
            ).encode()
            + head
        )
        remaining = size_bytes - 44
        while remaining > 0:
            piece = CHUNK[: min(len(CHUNK), remaining)]
            sock.sendall(piece)
            remaining -= len(piece)
        sock.sendall(tail)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status = int(response.split(b" ", 2)[1])
    return status, time.perf_counter() - started, response.split(b"\r\n\r\n", 1)[-1]


def measure(pid: int, port: int, size_mb: int) -> None:
    before = rss_bytes(pid)
    sampler = RssSampler(pid)
    sampler.start()
    status, seconds, body = upload(port, size_mb * MB)
    sampler.stop.set()
    sampler.join()
    growth = (sampler.peak - before) / 2**20
    print(
        f"{size_mb:>6} MB upload: HTTP {status} in {seconds:6.1f} s "
        f"({size_mb / seconds:6.1f} MB/s); API RSS before {before / 2**20:6.1f} MiB, "
        f"peak {sampler.peak / 2**20:6.1f} MiB, growth {growth:6.1f} MiB"
    )
    if status != 202:
        print("  answer:", body[:300].decode(errors="replace"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="speechq-bench-upload-") as tmp:
        data = Path(tmp)
        config = data / "config.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "model_list": [
                        {
                            "model_name": "big-stt",
                            "litellm_params": {"model": "local/whisper"},
                            "model_info": {"max_file_size_mb": 1000},
                        }
                    ]
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("SPEECHQ_")}
        env.update(
            SPEECHQ_DATA_DIR=str(data), SPEECHQ_CONFIG=str(config), SPEECHQ_MASTER_KEY=MASTER_KEY
        )
        me = [sys.executable, "-m", "speechq.cli"]
        subprocess.run([*me, "migrate"], env=env, check=True, capture_output=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        api = subprocess.Popen(
            [*me, "api", "--port", str(port)],
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("the API did not start")
                time.sleep(0.2)
            print(f"speechq api pid {api.pid}, embedded default, storage: local folder")
            measure(api.pid, port, 5)  # baseline
            measure(api.pid, port, args.size_mb)
        finally:
            os.killpg(api.pid, signal.SIGTERM)
            api.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
