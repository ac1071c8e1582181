"""The node process entry point (diffopt_ros.nodes.runner.run_node), run as a process."""
import os
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent('''
    import gc, os, signal, sys
    from rclpy.node import Node
    from diffopt_ros.nodes.runner import run_node

    def make():
        node = Node('gc_probe')
        def tick():
            print('frozen', gc.get_freeze_count(), flush=True)
            os.kill(os.getpid(), signal.SIGINT)
        node.create_timer(0.05, tick)
        return node

    sys.exit(run_node(make, args=['gc_probe']))
''')


def test_objects_alive_at_start_up_are_frozen_out_of_the_collector():
    """A full garbage collection in a running node scans only what the node made after
    start-up: the objects alive once the node is made (here rclpy's and the node's; in the
    real nodes also torch's, ~200,000 in all, a full collection over which takes ~0.1 s, a
    missed control tick) are frozen, and SIGINT still ends the node with 0."""
    env = dict(os.environ, ROS_DOMAIN_ID='87')
    done = subprocess.run([sys.executable, '-c', PROBE], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    counts = [int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith('frozen')]
    assert counts and counts[0] > 10_000, done.stdout
