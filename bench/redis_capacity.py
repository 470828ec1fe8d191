"""Redis's side of the bus: CPU per published message on each topology (docs/scaling.md).

    python bench/redis_capacity.py [--messages 200000] [--nodes 3] [--rooms 30] [--size 200]

Starts, on free 127.0.0.1 ports, one Redis; three independent Redis (the original's scheme:
each message published on one of them, every node subscribed to all); and a three-primary Redis
Cluster (sharded pub/sub: SPUBLISH / SSUBSCRIBE on the channel's shard). ``--nodes`` subscriber
connections per Redis process stand for the cluster's nodes, each subscribed to every room
channel (every node has members in every room, as in W3). One pipelined publisher sends
``--messages`` messages of ``--size`` bytes over ``--rooms`` channels. Reported: messages/s
through the whole run, and the CPU seconds each Redis process spent per message it carried
(psutil), from which one shard's capacity at one core follows.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Dict, List

import psutil
import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import cluster_port, free_port, wait_port  # noqa: E402


def spawn(port: int, work: str, cluster: bool) -> subprocess.Popen:
    directory = os.path.join(work, str(port))
    os.makedirs(directory)
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", directory, "--protected-mode", "no"]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port, proc, 10.0)
    return proc


def slot_owner(ports: List[int], channel: str) -> int:
    client = redis.Redis(port=ports[0])
    slot = client.execute_command("CLUSTER", "KEYSLOT", channel)
    for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
        if start <= slot <= end:
            return int(primary[1])
    raise RuntimeError("no owner for slot %d" % slot)


def drain(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            if not sock.recv(1 << 20):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def subscribe(port: int, channels: List[str], sharded: bool) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
    for channel in channels:  # one channel per command: never two slots in one SSUBSCRIBE
        sock.sendall(("*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(command), command, len(channel), channel)).encode())
    time.sleep(0.2)
    return sock


def measure(name: str, ports: List[int], procs: List[subprocess.Popen], args: argparse.Namespace,
            sharded: bool) -> Dict[str, object]:
    channels = ["ws:room%d" % i for i in range(args.rooms)]
    if sharded:
        owners = {channel: slot_owner(ports, channel) for channel in channels}
    else:
        owners = {channel: 0 for channel in channels}
    stop = threading.Event()
    readers = []
    for port in ports:
        mine = [c for c in channels if not sharded or owners[c] == port]
        for _ in range(args.nodes):
            sock = subscribe(port, mine, sharded)
            thread = threading.Thread(target=drain, args=(sock, stop), daemon=True)
            thread.start()
            readers.append((sock, thread))
    clients = {port: redis.Redis(port=port) for port in ports}
    handles = {port: psutil.Process(proc.pid) for port, proc in zip(ports, procs)}
    before = {port: sum(handles[port].cpu_times()[:2]) for port in ports}
    body = b"x" * args.size
    carried = {port: 0 for port in ports}
    command = "SPUBLISH" if sharded else "PUBLISH"
    start = time.perf_counter()
    batch = 200
    pipes = {port: clients[port].pipeline(transaction=False) for port in ports}
    for i in range(args.messages):
        channel = channels[i % len(channels)]
        port = owners[channel] if sharded else ports[random.randrange(len(ports))]
        pipes[port].execute_command(command, channel, body)
        carried[port] += 1
        if i % batch == batch - 1:
            for pipe in pipes.values():
                pipe.execute()
    for pipe in pipes.values():
        pipe.execute()
    elapsed = time.perf_counter() - start
    cpu = {port: sum(handles[port].cpu_times()[:2]) - before[port] for port in ports}
    stop.set()
    for sock, thread in readers:
        thread.join(1)
        sock.close()
    per_message = {port: cpu[port] / carried[port] * 1e6 for port in ports if carried[port]}
    return {"topology": name, "messages_per_s": round(args.messages / elapsed),
            "redis_cpu_us_per_message": {str(p): round(v, 2) for p, v in per_message.items()},
            "share_of_messages": {str(p): round(carried[p] / args.messages, 2) for p in ports}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rooms", type=int, default=30)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--topologies", default="single,independent3,cluster3")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="crossws-capacity-")
    results = []
    try:
        for name in args.topologies.split(","):
            cluster = name == "cluster3"
            count = 1 if name == "single" else 3
            ports = [cluster_port() if cluster else free_port() for _ in range(count)]
            procs = [spawn(port, work, cluster) for port in ports]
            try:
                if cluster:
                    subprocess.run(["redis-cli", "--cluster", "create"] + ["127.0.0.1:%d" % p for p in ports]
                                   + ["--cluster-yes"], check=True, stdout=subprocess.DEVNULL, timeout=30)
                    while b"cluster_state:ok" not in subprocess.run(
                            ["redis-cli", "-p", str(ports[0]), "cluster", "info"], capture_output=True).stdout:
                        time.sleep(0.2)
                results.append(measure(name, ports, procs, args, cluster))
                print(results[-1], flush=True)
            finally:
                for proc in procs:
                    proc.kill()
                    proc.wait(5)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
