"""A 3-node JetStream cluster with streams replicated 3 times: one node killed, the
collector and the writer go on (they know every node's URL), and no bar is lost."""

from __future__ import annotations

import time

from nats_harness import free_port, poll, start_server

pytest_plugins = ["nats_harness"]  # its fixture make_host


def test_a_node_of_the_cluster_down_stops_nothing(tmp_path, make_host):
    client_ports = [free_port() for _ in range(3)]
    route_ports = [free_port() for _ in range(3)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    servers = [
        start_server(
            tmp_path / f"node{index}",
            [
                "--server_name", f"n{index}",
                "--cluster_name", "sptrader",
                "--cluster", f"nats://127.0.0.1:{route_ports[index]}",
                "--routes", routes,
            ],
            port=client_ports[index],
        )
        for index in range(3)
    ]  # fmt: skip
    try:
        urls = [server.url for server in servers]
        collector = make_host("collector", "collector", urls, replicas=3)
        writer = make_host("writer", "writer", urls, replicas=3)
        collector.start()
        writer.start()
        poll(lambda: writer.service("nats-in")["counters"].get("consumed", 0) > 20, 60, "bars")
        servers[0].kill()
        consumed = writer.service("nats-in")["counters"]["consumed"]
        poll(
            lambda: writer.service("nats-in")["counters"].get("consumed", 0) > consumed + 20,
            60,
            "bars to keep arriving with a node down",
        )
        time.sleep(1)
        collector.stop()
        poll(
            lambda: writer.service("nats-in")["counters"].get("lag_messages", 0) == 0,
            30,
            "the writer to catch up",
        )
        time.sleep(2)
        writer.stop()
        theirs = {(row[0], row[1]): row[2:] for row in collector.bars()}
        ours = {(row[0], row[1]): row[2:] for row in writer.bars()}
        last = {name: max(ts for (inst, ts) in theirs if inst == name) for name, _ in theirs}
        closed = {key: value for key, value in theirs.items() if key[1] < last[key[0]]}
        assert {key: ours.get(key) for key in closed} == closed
    finally:
        for server in servers:
            server.kill()
