#!/usr/bin/env bash
# Real ROS 2 launch, where ../shared/ros-launch exists (skipped otherwise):
#   install the real launch / launch_ros / ros2cli wheels into the venv, then
#   (a) test/test_launch.py with real launch (its real-launch tests must run, not skip);
#   (b) one `ros2 launch diffopt_ros sim_demo.launch.py` of a colcon install: an external
#       client (.ci/reach_goal.py: rclpy only) sends a goal in world coordinates and waits
#       until the simulated robot is there; SIGINT; `ros2 launch` exits 0; the bag reads back.
# Usage: .ci/real_launch.sh [VENV]   (default .venv; the venv gets the launch wheels;
#        DIFFOPT_ROS_LAUNCH_DIR: the ros-launch folder if not ../shared/ros-launch)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
launch_dir="${DIFFOPT_ROS_LAUNCH_DIR:-../shared/ros-launch}"
if [ ! -d "$launch_dir" ]; then
  echo "== real launch: $launch_dir not found, skipped"
  exit 0
fi
venv="$(cd "${1:-.venv}" && pwd)"
py="$venv/bin/python"
export ROS_LOG_DIR="${ROS_LOG_DIR:-$(mktemp -d /tmp/diffopt_launch_log.XXXX)}"
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-78}"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export PYTHONUNBUFFERED=1

echo "== real launch: install into $venv"
"$launch_dir/install.sh" "$venv"

echo "== (a) test_launch.py with real launch"
AMENT_PREFIX_PATH="$venv" DIFFOPT_ROS_REAL_LAUNCH=1 \
  "$py" -m pytest test/test_launch.py -q -p no:cacheprovider

echo "== (b) ros2 launch diffopt_ros sim_demo.launch.py, goal from an external client, SIGINT"
ws="$(mktemp -d /tmp/diffopt_launch_ws.XXXX)"
mkdir -p "$ws/src/diffopt_ros" "$ws/run"
git ls-files -z | tar --null -T - -c | tar -x -C "$ws/src/diffopt_ros"
(cd "$ws" && "$venv/bin/colcon" build --event-handlers console_direct- >"$ws/colcon.log" 2>&1) \
  || { cat "$ws/colcon.log"; echo "colcon build failed"; exit 1; }
set +u
# shellcheck disable=SC1091
. "$ws/install/setup.bash"
set -u
export AMENT_PREFIX_PATH="$AMENT_PREFIX_PATH:$venv"
# A background job of a non-interactive shell ignores SIGINT: restore it (see ROS_NOTES.md).
(cd "$ws/run" && exec env --default-signal=INT "$venv/bin/ros2" launch diffopt_ros \
  sim_demo.launch.py) >"$ws/launch.log" 2>&1 &
pid=$!
fail() { cat "$ws/launch.log"; echo "$1"; kill -INT "$pid" 2>/dev/null || true; sleep 5;
         kill -KILL "$pid" 2>/dev/null || true; exit 1; }
# The loop world starts at (1.5, 1.5, 0); (4.0, 1.5) is 2.5 m ahead along the first corridor.
"$py" "$root/.ci/reach_goal.py" --goal 4.0 1.5 --frame map --tolerance 0.3 --timeout 180 \
  || fail "the robot did not reach the goal"
kill -INT "$pid"
for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
kill -0 "$pid" 2>/dev/null && fail "ros2 launch still running 60 s after SIGINT"
rc=0; wait "$pid" || rc=$?
[ "$rc" -eq 0 ] || fail "ros2 launch exited with $rc after SIGINT"
"$py" - "$ws/run/runs" <<'PY'
import sys
from pathlib import Path
from rosbags.highlevel import AnyReader
runs = sorted(Path(sys.argv[1]).iterdir())
assert len(runs) == 1, runs
counts = {}
with AnyReader(runs) as reader:
    for connection, _, data in reader.messages():
        reader.deserialize(data, connection.msgtype)
        counts[connection.topic] = counts.get(connection.topic, 0) + 1
print(f'bag {runs[0].name}: {counts}')
missing = [t for t in ('/cmd_vel', '/odom', '/ground_truth/odom', '/scan', '/slam/odom',
                       '/goal_pose', '/diagnostics') if not counts.get(t)]
assert not missing, f'not recorded: {missing}'
PY
grep -E "process has (finished|died)" "$ws/launch.log" || true
clean="$(grep -c "process has finished cleanly" "$ws/launch.log" || true)"
[ "$clean" -eq 4 ] || fail "$clean of 4 nodes finished cleanly"
rm -rf "$ws"
echo "== real launch: done"
