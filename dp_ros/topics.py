"""Topic and service names of the dp_ros graph: the one place they are spelled.

Nodes take these as defaults; remap with ROS arguments as usual.
"""

# camera_node publishes one image topic per camera: CAMERA_IMAGE.format(name=<camera name>)
CAMERA_IMAGE = "/camera/{name}/image_raw"
ROBOT_TCP_POSE = "/robot/tcp_pose"          # geometry_msgs/PoseStamped, base frame
ROBOT_JOINTS = "/robot/joint_states"        # sensor_msgs/JointState
# a tracked object's pose: geometry_msgs/PoseStamped, base frame, from any tracker (an AprilTag or
# motion-capture node; the sim world for Push-T's T): OBJECT_POSE.format(name=<object name>)
OBJECT_POSE = "/object/{name}/pose"
POLICY_CHUNK = "/policy/action_chunk"       # trajectory_msgs/MultiDOFJointTrajectory, full Tp chunk
POLICY_REQUEST = "/policy/request"          # MultiDOFJointTrajectory: scheduler asks for the next chunk;
                                            # the committed path when stitching by inpainting, else empty
SERVO_WAYPOINTS = "/servo/waypoints"        # MultiDOFJointTrajectory, future waypoints only
SERVO_TARGET = "/servo/target_pose"         # PoseStamped: teleop's direct target (streamed)
SERVO_COMMAND = "/servo/command"            # PoseStamped: what the servo actually commanded (clamped)
SERVO_STATE = "/servo/state"                # diagnostic_msgs/DiagnosticArray on every change: message =
                                            # hold reason or "following", stamp = that tick's command stamp
SERVO_ENABLE = "/servo/enable"              # std_srvs/SetBool: false = hold and drop waypoints,
                                            # true = re-sync to the measured pose and follow again
SERVO_RESET = "/servo/reset"                # std_srvs/Trigger: clear a latched e-stop / fault (then enable)
SERVO_MOVE_TO_START = "/servo/move_to_start"  # std_srvs/Trigger: slow move to the configured start pose
SERVO_USE_SOURCE = "/servo/use_{source}"    # std_srvs/Trigger, source policy | teleop: the one source
                                            # the servo follows (the other's input is ignored)
ESTOP = "/estop"                            # std_msgs/Empty topic and std_srvs/Trigger service: hold
                                            # now, latched until SERVO_RESET
SCHEDULER_ENABLE = "/scheduler/enable"      # std_srvs/SetBool: false = stop streaming, drop chunk
POLICY_HEARTBEAT = "/policy/heartbeat"      # std_msgs/Header at a fixed rate: the policy is alive
TELEOP_TWIST = "/spacenav/twist"            # geometry_msgs/Twist, as the ROS spacenav driver
TELEOP_JOY = "/spacenav/joy"                # sensor_msgs/Joy, as the ROS spacenav driver
RECORD_START = "/teleop/start_episode"      # std_srvs/Trigger: start recording an episode
RECORD_STOP = "/teleop/stop_episode"        # std_srvs/Trigger: stop and keep the episode
RECORD_DISCARD = "/teleop/discard_episode"  # std_srvs/Trigger: stop and delete the episode
TELEOP_RESYNC = "/teleop/resync"            # std_srvs/Trigger: target := measured TCP pose
DIAGNOSTICS = "/diagnostics"                # diagnostic_msgs/DiagnosticArray

# Simulated hardware: the sim world node plays the robot and cameras on these topics; the sim
# backends of camera_node / robot_state_node / ur5_servo_node talk to them, never the other nodes.
SIM_CAMERA = "/sim/camera/{name}/image"     # sensor_msgs/Image, stamp = render time
SIM_ROBOT_STATE = "/sim/robot/joint_states" # sensor_msgs/JointState (+ TCP pose in SIM_ROBOT_TCP)
SIM_ROBOT_TCP = "/sim/robot/tcp_pose"       # geometry_msgs/PoseStamped
SIM_SERVO = "/sim/robot/servo"              # geometry_msgs/PoseStamped: servoL target
SIM_TASK_STATE = "/sim/task/state"          # diagnostic_msgs/DiagnosticStatus: coverage, success, ...
SIM_RESET = "/sim/reset"                    # std_srvs/Trigger: new episode
