"""The UR dashboard server (port 29999) of the controller emulator: one text command per line,
one reply line, answers worded as PolyScope 5 words them (those ur_rtde parses)."""

from dp_ros.hardware import ur_status as st

WELCOME = "Connected: Universal Robots Dashboard Server\n"


class DashboardServer:
    def __init__(self, robot, remote_control=True, polyscope="URSoftware 5.11.1.108318 (Nov 15 2021)"):
        self.robot = robot
        self.remote_control = remote_control
        self.polyscope = polyscope
        self.commands = []   # every command received, for tests

    def serve(self, conn, addr):
        conn.sendall(WELCOME.encode())
        buffer = b""
        while True:
            chunk = conn.recv(4096)
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode("utf-8", "replace").strip()
                self.commands.append(command)
                reply = self.reply(command)
                conn.sendall((reply + "\n").encode())
                if command == "quit":
                    return

    def reply(self, command: str) -> str:
        arm, script = self.robot.arm, self.robot.script
        with arm.lock:
            safety = st.SAFETY_MODE.get(arm.safety_mode, "?").upper().replace(" ", "_")
            c = command.lower()
            if c == "polyscopeversion":
                return self.polyscope
            if c == "is in remote control":
                return "true" if self.remote_control else "false"
            if c == "robotmode":
                return "Robotmode: " + st.ROBOT_MODE.get(arm.robot_mode, "?").upper().replace(" ", "_")
            if c in ("safetymode", "safetystatus"):
                return ("Safetymode: " if c == "safetymode" else "Safetystatus: ") + safety
            if c == "running":
                return f"Program running: {str(arm.program_running).lower()}"
            if c == "programstate":
                return ("PLAYING" if arm.program_running else "STOPPED") + " <unnamed>"
            if c == "stop":
                script.stop()
                return "Stopped"
            if c == "unlock protective stop":
                if arm.safety_mode != st.SAFETY_PROTECTIVE_STOP:
                    return "Cannot unlock protective stop until 5s after occurrence. Always inspect cause of protective stop before unlocking"  # noqa: E501
                self.robot.clear_faults()
                return "Protective stop releasing"
            if c == "close safety popup":
                return "closing safety popup"
            if c.startswith("popup"):
                return "showing popup"
            if c == "close popup":
                return "closing popup"
            if c == "get robot model":
                return "UR5"
            if c == "get serial number":
                return "20000000000"
            if c == "quit":
                return "Disconnected"
            return f"could not understand: '{command}'"
