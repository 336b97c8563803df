"""Localhost emulators of dp_ros's devices, for the tests and for dry runs without hardware.
The real client libraries talk to them, so the backends' real code paths run.

rtde_emulator.URControllerEmulator
    A UR controller for ur_rtde 1.6: RTDE (UR's published protocol v2) on port 30004 -- protocol
    version, controller version, output / input recipes (types, NOT_FOUND, IN_USE for a second
    writer), start / pause, data packages at the recipe's frequency --, the dashboard server
    (29999: PolyscopeVersion, is in remote control, stop, unlock protective stop, ...) and the
    script ports (30001-30003). A script sent there starts an emulated ur_rtde control script that
    answers RTDEControlInterface's register handshake (servoL moves the emulated TCP; setTcp,
    setPayload, setWatchdog / kickWatchdog, servoStop, stopScript act). Faults:
    protective_stop(), emergency_stop(), stop_program(), clear_faults(), freeze_clock(),
    stall_stream(), drop_connections(); remote_control=False for a robot in Local mode.
    ur_rtde's ports are fixed, so each emulator takes a loopback address of its own
    (free_loopback_host(): any 127.x.y.z); ur_rtde's bindings hold the interpreter lock while
    they block, so run the emulator in another process (process.InChildProcess, or the command
    line below) when ur_rtde is called from the same one.

        python -m dp_ros.testing.rtde_emulator --host 127.0.0.2 [--cb3] [--no-remote-control]
        # then robot_host: 127.0.0.2 in robot_state_node and ur5_servo_node

spacenavd_emulator.SpacenavdEmulator
    spacenavd on an AF_UNIX socket for libspnav (protocol v0): motion(), button(), kill() and
    start() again. libspnav finds it through $SPNAV_SOCKET.

        python -m dp_ros.testing.spacenavd_emulator /tmp/spnav.sock --wiggle
        # then SPNAV_SOCKET=/tmp/spnav.sock for the teleop node

Not emulated: the motion itself (the TCP jumps to each servo target), the controller's real
control script (its interpretation of servoL's lookahead and gain), the primary/secondary
client state streams on 30001/30002, RealSense cameras (test_hardware_realsense.py feeds
pyrealsense2's software device instead).
"""
